"""Reading spans back into pandas: from the local store or over DQL from DataKit."""
