"""Pure-PyTorch references: the ground truth of every v4_ascend op, one module per family.

Each function here is registered as the op's ``CompositeExplicitAutograd`` kernel, so it also serves
as the fallback on any device without a faster kernel. They favour clarity over speed, but keep
memory bounded (chunking) where the production shapes require it.
"""
