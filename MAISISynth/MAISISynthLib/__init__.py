"""Everything of the MAISISynth front ends that is not widget code.

`jobs` runs engine jobs in a worker process and follows their progress; `params` checks generation
settings against a model preset and writes job files; `panel` computes what the Slicer panel shows;
`geometry` converts NIfTI affines to Slicer's IJK-to-RAS; `devices` reads free GPU memory; `mrml`
(imports slicer) bridges MRML nodes and the engine's files. None of them imports torch or Qt: the
rule, and the modules it allows, are in `boundary`.
"""
