"""Pump Portal sync: the dlt source, its HTTP client, the model runner and the command line."""
