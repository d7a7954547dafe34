"""Plain torch/numpy functions (losses, distances, ...) used by fastreid_ext methods. No FastReID import.

Import the topic modules directly, e.g. ``from fastreid_ext.functional.local_distance import shortest_path``.
"""
