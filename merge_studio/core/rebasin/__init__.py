"""Git Re-Basin: find the hidden-unit permutations that align one model with another.

``spec`` derives which units move together from the traced graph, ``matching``
finds the permutations (Ainsworth et al. 2023, weight matching), ``apply``
reorders a state dict and proves the function did not change, ``merge_many``
aligns several models to their average, ``report`` writes what was moved.
"""
