/* streamer.adapters._resp.pack_command: a Redis command in RESP2 (an array
 * of bulk strings), as streamer.adapters.store sends a batch's EVALSHA. A batch has tens of
 * thousands of arguments; packing them in Python cost ~0.4 µs each.
 *
 * Arguments: bytes as they are, str as UTF-8, int in decimal and float as
 * repr() gives it (what the Python packer did); anything else is a TypeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* An argument's bytes; *tmp receives a new reference to free (or NULL). */
static int
argument_bytes(PyObject *a, const char **data, Py_ssize_t *size, PyObject **tmp)
{
    *tmp = NULL;
    if (PyBytes_CheckExact(a)) {
        *data = PyBytes_AS_STRING(a);
        *size = PyBytes_GET_SIZE(a);
        return 0;
    }
    if (PyUnicode_Check(a)) {
        *data = PyUnicode_AsUTF8AndSize(a, size);
        return *data == NULL ? -1 : 0;
    }
    if (PyLong_Check(a) || PyFloat_Check(a)) {
        *tmp = PyObject_Repr(a);
        if (*tmp == NULL) {
            return -1;
        }
        *data = PyUnicode_AsUTF8AndSize(*tmp, size);
        return *data == NULL ? -1 : 0;
    }
    if (PyBytes_Check(a)) {
        *data = PyBytes_AS_STRING(a);
        *size = PyBytes_GET_SIZE(a);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "a Redis argument must be bytes, str, int or float, not %.100s",
                 Py_TYPE(a)->tp_name);
    return -1;
}

/* The decimal digits of n >= 0 written at out; returns their count. */
static int
put_decimal(char *out, Py_ssize_t n)
{
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    for (int j = 0; j < k; j++) {
        out[j] = tmp[k - 1 - j];
    }
    return k;
}

static PyObject *
pack_command(PyObject *module, PyObject *arg)
{
    (void)module;
    PyObject *seq = PySequence_Fast(arg, "pack_command takes a list or tuple of arguments");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    /* first pass: the size (each argument: "$" digits CRLF data CRLF) */
    Py_ssize_t total = 1 + 20 + 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *data;
        Py_ssize_t size;
        PyObject *tmp;
        if (argument_bytes(items[i], &data, &size, &tmp) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        Py_XDECREF(tmp);
        total += 1 + 20 + 2 + size + 2;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    char *w = PyBytes_AS_STRING(out);
    *w++ = '*';
    w += put_decimal(w, n);
    *w++ = '\r';
    *w++ = '\n';
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *data;
        Py_ssize_t size;
        PyObject *tmp;
        if (argument_bytes(items[i], &data, &size, &tmp) < 0) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        *w++ = '$';
        w += put_decimal(w, size);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, data, (size_t)size);
        w += size;
        *w++ = '\r';
        *w++ = '\n';
        Py_XDECREF(tmp);
    }
    Py_DECREF(seq);
    if (_PyBytes_Resize(&out, w - PyBytes_AS_STRING(out)) < 0) {
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"pack_command", pack_command, METH_O,
     "pack_command(args) -> bytes: a Redis command in RESP (an array of bulk strings) from a "
     "list or tuple of bytes, str (UTF-8), int and float (repr)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_resp", "Redis commands packed in C (see streamer.adapters.store).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__resp(void)
{
    return PyModule_Create(&module_def);
}
