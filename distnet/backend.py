"""Global numeric settings (Keras's `keras.config`, also importable as `distnet.config`): the default float type, the
epsilon fuzz factor, the image data format (channels last), and distnet's intra-op threads."""
import threading

import numpy as np

_FLOATX = "float32"
_EPSILON = 1e-7


def floatx():
    """The default float type of new weights and computations: 'float32' (default) or 'float64'."""
    return _FLOATX


def set_floatx(value):
    """Set the default float type; 'float64' exists for gradient checks."""
    global _FLOATX
    if value not in ("float32", "float64"):
        raise ValueError(f"set_floatx expects 'float32' or 'float64', received {value!r}")
    _FLOATX = value


def epsilon():
    return _EPSILON


def set_epsilon(value):
    global _EPSILON
    _EPSILON = float(value)


def image_data_format():
    """Always 'channels_last': images are (batch, height, width, channels)."""
    return "channels_last"


def set_image_data_format(data_format):
    if data_format != "channels_last":
        raise ValueError(f"distnet supports data_format 'channels_last' only, received {data_format!r}")


def backend():
    """The name of the array library distnet computes with (Keras's `keras.config.backend()`)."""
    return "numpy"


# -- ufunc buffers -----------------------------------------------------------------------------------------------
# Elements per ufunc buffer while the engine computes (NumPy's default: 8192). NumPy >= 2.3 copies operands that
# are not contiguous through its buffers even when no cast is needed, whenever the rows it could run on in place
# are shorter than the buffer: a convolution's window sums (rows of 384 floats) and its pooling phases ran 2x
# slower than with buffers of 2048, which leave them in place (measured, 16 samples of the example CNN: window
# sum 27.5 -> 16.8 us, phase maximum 13.8 -> 6.0 us) and still give the casting ops (a float times a bool mask)
# their whole speed (40.9 -> 40.8 us; at 1024: 52).
UFUNC_BUFFER = 2048


class _UfuncBuffer(threading.local):
    depth = 0

    def __enter__(self):
        self.depth += 1
        if self.depth == 1:
            self.old = np.setbufsize(UFUNC_BUFFER)

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0:
            np.setbufsize(self.old)


_UFUNC_BUFFER = _UfuncBuffer()


def ufunc_buffer():
    """`with ufunc_buffer():` runs the block with UFUNC_BUFFER-element ufunc buffers in this thread (NumPy's
    setting is per thread; nested blocks cost one attribute test); the intra-op threads always run with them."""
    return _UFUNC_BUFFER


def _intraop_thread_init():
    np.setbufsize(UFUNC_BUFFER)


# -- intra-op threads -------------------------------------------------------------------------------------------
_THREADS = 1
_POOL = None
_BLAS_LIMIT = None       # threadpoolctl's handle while BLAS is held at one thread


def num_threads():
    return _THREADS


def set_num_threads(n):
    """Run convolution and pooling with `n` threads, each on a slice of the batch (like torch.set_num_threads).

    With n > 1, BLAS is limited to one thread per call (the threads already fill the cores), and every
    element-wise step (im2col, bias, activation, pooling, input-gradient sums) runs in parallel too, not only
    the matrix products; n = 1 (default) leaves BLAS's own threading as it is."""
    global _THREADS, _POOL, _BLAS_LIMIT
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive int, received {n!r}")
    if n == _THREADS:
        return
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None
    _THREADS = n
    if n > 1:
        import concurrent.futures

        from threadpoolctl import threadpool_limits
        if _BLAS_LIMIT is None:
            _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
        _POOL = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="distnet-intraop",
                                                      initializer=_intraop_thread_init)
    elif _BLAS_LIMIT is not None:
        _BLAS_LIMIT.restore_original_limits()    # back to BLAS's own threading
        _BLAS_LIMIT = None


def parallel_batches(n, work):
    """Call work(lo, hi, t) for T contiguous slices [lo, hi) of range(n), in parallel when T > 1; return the
    results in slice order. NumPy and BLAS release the GIL, so the slices really run on T cores."""
    t = min(_THREADS, n) if n > 0 else 1
    if t <= 1:
        return [work(0, n, 0)]
    bounds = [n * i // t for i in range(t + 1)]
    futures = [_POOL.submit(work, bounds[i], bounds[i + 1], i) for i in range(1, t)]
    first = work(bounds[0], bounds[1], 0)
    return [first] + [f.result() for f in futures]
