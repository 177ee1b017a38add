"""Procedural Wright-Giemsa smear fields and microscope videos, for the demo, tests and benchmarks.

Training never imports this package: it reads image folders, real or written by
`leukedge synth`. `cells` draws single cells as stain densities, `fields` composes and
colours a field and writes the data set, `video` films a slide tray, `cli` is the command.
"""
