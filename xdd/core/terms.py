"""The forms of the IB loss's pairwise term, named once (the config validates against them, the
loss and the retraining read them).  Imports nothing, so the lowest module may import it."""

PAIR_MODES = ("sphere", "ratio", "raw")  # how the pairwise term is made well posed
SPHERE_MODES = ("sphere", "ratio")  # the forms that put the embedding on the unit sphere
