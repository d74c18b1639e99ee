"""What runs inside ComfyUI: the Z* hook, the model wrappers, the runs, the model families.

    families/      one adapter per model family (layers, hook, noise parameterisation, default preset)
    patch.py       the Z* attention hook and its installation (one Z* patch at a time)
    wrappers.py    the APPLY_MODEL / PREPARE_SAMPLING / CALC_COND_BATCH wrappers Z* adds
    sampler.py     the Z* run through ComfyUI's sampling (zstar_sample)
    inversion.py   DDIM inversion of LATENTs
    nulltext.py    null-text optimisation (the official content path for CFG > 1)
    record.py      fast mode's style record
    style_map.py   where the style went, rendered
    style_folders.py  where style files live, which names are allowed
    checks.py      checks that need the model or the tensors
    host.py        the few calls into ComfyUI's runtime (attention backend, sampling, progress)

The nodes (../nodes) call these; the method itself is ../zstar_attention (plain torch).
"""
