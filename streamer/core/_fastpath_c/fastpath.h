/* Shared by the files of the compiled kernel (streamer.core._fastpath):
 *   parse.c    Kernel.parse: raw values to rows (streamer/core/fastpath.py
 *              is the typed face; read it first)
 *   encode.c   encode_cells, the twin of streamer.core.aggregate.encode_cells
 *   module.c   the module
 */
#ifndef HOTSPOTS_FASTPATH_H
#define HOTSPOTS_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cell blobs are written as native doubles: little-endian hosts only"
#endif

/* format(x, "x"): lowercase hex without leading zeros; returns the length. */
int put_hex(char *out, uint64_t x);

/* parse.c */
extern PyTypeObject KernelType;
int parse_module_init(void); /* interns the field names; -1 on error */

/* encode.c */
PyObject *fastpath_encode_cells(PyObject *module, PyObject *args);

#endif
