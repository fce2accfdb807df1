"""A worked fxq plugin (see fxq's docs/authoring.md): the ``fold-channel-scale`` pass, which folds the custom op
``fxq_example::channel_scale`` into the conv or linear before it, and the ``x86-per-tensor`` backend, x86's
kernels with per-tensor weights and one extra fusion rule. fxq finds both through this package's entry points."""
