"""Runs away from the caller's thread: the worker process (its protocol, client and the background run the Qt
files poll), the team server's client and protocol, and the one request dispatch the worker and the server share."""
