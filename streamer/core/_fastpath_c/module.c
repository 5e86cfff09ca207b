/* The module streamer.core._fastpath: the Kernel type (parse.c),
 * encode_cells (encode.c). */
#include "fastpath.h"

static PyMethodDef module_methods[] = {
    {"encode_cells", fastpath_encode_cells, METH_VARARGS,
     "encode_cells(m, n_res, t_s, weight, family, category, hour_of_week, cells, "
     "n_families, n_categories, half_lives, landmarks, profile) -> "
     "(used families, used categories, [(cell hex, blob)])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "The worker's per-batch kernel in C (see streamer.core.fastpath).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&KernelType) < 0) {
        return NULL;
    }
    if (parse_module_init() < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&KernelType);
    if (PyModule_AddObject(m, "Kernel", (PyObject *)&KernelType) < 0) {
        Py_DECREF(&KernelType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
