"""A reference tomography pipeline in the seed's four steps, run by opsctl (examples/tomo).

acquire → filter → calibrate → reconstruct: simulate a parallel-beam scan of a 3-D phantom with
noise, flat/dark fields and a centre of rotation unknown to the later steps; ramp-filter the
sinograms; estimate the centre of rotation; reconstruct every slice by filtered back-projection
on an OpenCL device (numpy where there is none). All data goes through opsctl_contract.storage under
OPSCTL_RUN_URI, so the same commands run on a local directory and on S3.
"""
