"""The deterministic simulation of windows and server under faults (``make sim``)."""
