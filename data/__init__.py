"""The data sets shipped with lit-ft (each folder has a README and the build.py that wrote it). Installed as the
package ``lit_ft.shipped_data``, where ``${paths.data_dir}`` points outside a checkout (``lit_ft/resolvers.py``)."""
