"""Operators: the operator contract (base), the lazy registry, and one subpackage per family."""
