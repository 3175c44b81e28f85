"""URSAMLib.memory: the free memory, and refusing volumes that cannot fit, from their size alone."""
import os
import sys

import pytest

from URSAMLib import memory
from URSAMLib.errors import URSAMError


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/meminfo is Linux's")
def test_free_memory_is_the_kernels_estimate_within_any_container_limit():
    free = memory.available_memory()
    meminfo = memory._meminfo_available()
    assert meminfo is not None and 0 < free <= meminfo
    headroom = memory._cgroup_headroom()
    assert headroom is None or free <= headroom


def test_without_meminfo_the_free_pages_are_used_and_else_nothing_is_known(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}[name])
    assert memory.available_memory() == 4096 * 1000

    def unsupported(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", unsupported)
    assert memory.available_memory() is None
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: 123)
    assert memory.available_memory() == 123


def test_a_volume_is_refused_only_when_it_cannot_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 512 * 512 * 100 * memory.BYTES_PER_VOXEL)
    memory.check_fits((512, 512, 100), "ct")  # exactly fits
    with pytest.raises(URSAMError, match=r"ct has 512x512x101 voxels: segmenting it needs about 1\.3 GB of memory, "
                                         r"but only 1\.3 GB is free"):
        memory.check_fits((512, 512, 101), "ct")
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    memory.check_fits((1024, 1024, 1024), "ct")  # unknown memory: only the hard cap
    with pytest.raises(URSAMError, match="more than URSAM handles"):
        memory.check_fits((1024, 1024, 1025), "ct")

