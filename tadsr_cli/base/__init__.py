"""The bottom layer: typed errors, atomic file writes, device choice, out-of-memory detection, safe message text.

Modules here import nothing from the rest of `tadsr_cli`; every other layer may import them.
"""
