"""Sub-commands of `maisi` that belong to the engine core (generate, info, inpaint)."""
