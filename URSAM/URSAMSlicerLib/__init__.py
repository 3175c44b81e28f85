"""Helpers of the URSAM 3D Slicer module, kept out of URSAM.py so that it stays glue.

* ``catalogue``: the organ catalogue (``Resources/organs.json``): names, colours, terminology.
* ``jobs``: a UR-SAM run as a job that runs in this process or in a background process.
* ``regions``: per-organ statistics and the uncertain regions the user steps through.
* ``mrml``: conversion between MRML nodes and URSAMLib's arrays, and the result nodes.
* ``dependencies``: installing what URSAMLib needs inside Slicer, on request.
* ``processes``: starting the background worker hidden, and ending its whole process tree.
* the module's classes, which URSAM.py re-exports (Slicer looks them up there): ``requests`` (a
  request and the outputs of a run), ``logic`` with ``prompting`` (URSAMLogic), ``widget`` with
  ``widget_settings``, ``widget_prompts`` and ``widget_run`` (URSAMWidget), ``gui`` (what the
  panel's parts share), ``moduletest`` (URSAMTest, Slicer's self-test).

``catalogue``, ``jobs``, ``processes``, ``regions`` and ``dependencies`` are plain Python and run
without Slicer (the background worker imports only these); ``mrml`` and the module's classes
import Slicer.
"""
