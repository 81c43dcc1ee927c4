"""Experiments above the engine: they run recipes and compare what they produced (`flywheel compare`)."""
