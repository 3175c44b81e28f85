"""Helpers of the URSAM 3D Slicer module, kept out of URSAM.py so that it stays glue.

* ``catalogue``: the organ catalogue (``Resources/organs.json``): names, colours, terminology.
* ``jobs``: a UR-SAM run as a job that runs in this process or in a background process.
* ``regions``: per-organ statistics and the uncertain regions the user steps through.
* ``mrml``: conversion between MRML nodes and URSAMLib's arrays, and the result nodes.
* ``dependencies``: installing what URSAMLib needs inside Slicer, on request.

Only ``mrml`` imports Slicer/VTK; the others are plain Python and run without Slicer.
"""
