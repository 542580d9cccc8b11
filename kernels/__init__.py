"""Triton device code for fastpeft, installed as ``fastpeft.kernels``.

Only ``fastpeft.triton_path`` imports these modules. The folder is mapped onto
``fastpeft.kernels`` by the package-dir setting in pyproject.toml; no top-level ``kernels`` package
is installed (a popular PyPI package has that name).

When Python runs from the repository root, this folder is importable as ``kernels`` anyway, and
transformers probes ``import kernels`` to detect the hub-kernels package. Raising here would break
``import transformers`` from the repository root, so instead the top-level name exposes no version
(transformers then treats the hub package as absent) and any attribute access explains the mistake.
"""

if __name__ == "kernels":

    def __getattr__(name: str):
        raise AttributeError(
            f"`kernels.{name}`: this is fastpeft's Triton kernel folder, importable only as "
            "`fastpeft.kernels` (install fastpeft with `pip install -e . --no-build-isolation`)"
        )
