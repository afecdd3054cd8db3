"""Input sources: plain GDAL rasters (:mod:`.raster`) and Sentinel-2 L2A SAFE products (:mod:`.safe`)."""
