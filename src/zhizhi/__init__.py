"""zhizhi (整体智治): the software for a city operations centre's case loop."""

__version__ = "0.1.0"
