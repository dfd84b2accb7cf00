"""pazuzu: a process supervisor for Procfile applications."""

__version__ = "0.1.0"
