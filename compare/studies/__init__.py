"""The well-posedness studies of ``mfglab wellposed`` (see :mod:`compare.wellposed`).

Each module has ``run(quick=False, seeds=None, log=print, **options) -> StudyOutput``.
"""
