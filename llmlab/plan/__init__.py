"""Planning a sweep: the grid of calls, their estimates, and the providers they go to."""
