"""The static optimal-transport route (``method="ot"``) for otflow, wgf and bridges.

ν = 0: the back-and-forth method on the dual of one JKO step; ν > 0: Sinkhorn
with the Neumann heat kernel and the Schrödinger system (``entropic``).
NumPy/SciPy/Numba only: nothing here imports torch or DOLFINx.
"""
