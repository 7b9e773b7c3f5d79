"""The ``relevanz`` command line: :mod:`~streams.cli.commands` holds the command
group and the operations commands; the bench (:mod:`streams.bench`), the status
overview (:mod:`streams.api.overview`) and the demo (:mod:`streams.sim`) bring
their own commands or bodies. :mod:`~streams.cli.one_line` turns an error into
the one line every command ends with.
"""

from streams.cli.commands import main

__all__ = ["main"]
