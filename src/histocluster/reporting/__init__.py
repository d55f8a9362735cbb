"""What people look at: colours, drawings (overlays, overviews, galleries), QuPath GeoJSON,
the viewer JSON, counts and the HTML report.

Owned by the ``annotation`` pipeline."""
