"""Adapters: the outside world (files, databases, brokers) behind the domain's ports."""
