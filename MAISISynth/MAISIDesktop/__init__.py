"""MAISISynth desktop app: PyQt5 + VTK front end for MAISI synthetic CT generation.

The app never imports torch: generation runs in a worker process started through
`MAISISynthLib.jobs`, and the window only loads the files the worker writes.
"""
