"""fxq's built-in passes, one module each. Import a pass module to register it, or ask
``fxq.pass_registry.get_pass(name)``, which imports built-ins on first use."""
