"""The ``relevanz`` command line.

:mod:`~streams.cli.commands` holds the command group (the ``relevanz`` entry
point is ``streams.cli.commands:main``) and the operations commands; the bench
(:mod:`streams.bench`), the status overview (:mod:`streams.api.overview`) and
the demo (:mod:`streams.sim`) bring their own commands or bodies.
:mod:`~streams.cli.one_line` turns an error into the one line every command
ends with.  This package imports nothing itself: the commands import
``one_line``, so importing it must not import the commands back.
"""
