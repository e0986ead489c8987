"""Sources of the Triton ``model.py`` adapters, copied into the repository by the renderer.

They import ``triton_python_backend_utils``, which exists only inside the server's Python
backend; import them only there.
"""
