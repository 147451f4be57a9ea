"""lambda: the model as an AWS Lambda function behind API Gateway (zip + SAM template).

- `target`: the `LambdaTarget` the registry loads (options, template context, composition);
- `packaging`: the zip builder (manylinux wheels, strip, precompile, size limits);
- `local`: the runtime's interpreter here (or a stand-in zip) and the function's settings;
- `events`: checks on the handler itself, with API Gateway events;
- `emulator`: a local API Gateway and Lambda execution environment (standard library only: it
  runs as a script in the clean interpreter too).
"""

from deployctl.targets.aws_lambda.events import size_check
from deployctl.targets.aws_lambda.local import function_config, local_run
from deployctl.targets.aws_lambda.packaging import UNZIPPED_LIMIT, too_big, write_model_tarball
from deployctl.targets.aws_lambda.target import LambdaTarget
from deployctl.targets.shared import MB

__all__ = [
    "MB",
    "UNZIPPED_LIMIT",
    "LambdaTarget",
    "function_config",
    "local_run",
    "size_check",
    "too_big",
    "write_model_tarball",
]
