"""`maisi serve`: the worker protocol over HTTP, for front ends on machines without a GPU."""
