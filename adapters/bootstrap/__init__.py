"""The composition root: settings from `BUTLER_*`, and the one wiring function (`wiring`)
that every entry point and every test uses to build the app. The only package of
`adapters/` that imports more than one technology package."""
