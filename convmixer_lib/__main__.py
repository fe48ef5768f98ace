"""`python -m convmixer_lib` and `convmixer`: the command line (`cli.main`), without
the lines TensorFlow's C++ code writes while it starts (oneDNN, CUDA drivers),
which `TF_CPP_MIN_LOG_LEVEL` does not silence."""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_hidden():
    """Send what is written to file descriptor 2 (stderr, C++ code included) to a
    temporary file while the block runs; if the block raises, write it out
    before the error propagates, so nothing that explains a failure is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as hidden:
        os.dup2(hidden.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            hidden.seek(0)
            sys.stderr.write(hidden.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run():
    """Start TensorFlow with its start-up lines hidden, then run the command line."""
    with native_stderr_hidden():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the devices' start-up lines, now
        from .cli import main
    main()


if __name__ == "__main__":
    run()
