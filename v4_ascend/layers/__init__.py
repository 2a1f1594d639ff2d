"""Model building blocks built from the public ops (:mod:`v4_ascend.ops`) and small Python helpers."""
