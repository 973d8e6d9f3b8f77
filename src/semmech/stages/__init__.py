"""Stage entry points: one module per ``workflow/rules/*.smk`` file, one ``run_<rule>``
function per rule. Each reads its input files, calls the science, writes its outputs
atomically; nothing outside this package handles paths of a run.
"""
