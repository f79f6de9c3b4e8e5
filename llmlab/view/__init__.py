"""What the user sees while a sweep runs: the notebook grid and the terminal progress bar."""
