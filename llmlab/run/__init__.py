"""Running calls: the concurrent runner, retries, rate limits, cross-process claims, cassettes."""
