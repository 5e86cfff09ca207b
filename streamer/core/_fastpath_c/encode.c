/* encode_cells: per-cell sums of a batch's rows, packed as the store's
 * bulk merge takes them (the twin of streamer.core.aggregate.encode_cells;
 * see streamer/core/fastpath.py). */
#include "fastpath.h"

/* libm's pow through a pointer the compiler cannot see through: it must not
 * rewrite pow(2, x) as exp2(x) (Python's math.pow and the store's Lua call
 * pow; a retraction must subtract exactly what was added). */
static double (*volatile libm_pow)(double, double) = pow;

typedef struct {
    uint64_t cell;
    Py_ssize_t row;
} CellRow;

/* Sorts rows by cell, equal cells in row order: an LSD radix sort (stable)
 * that skips the bytes all cells share (H3 ids of one resolution share many). */
static void
sort_by_cell(CellRow *rows, CellRow *tmp, Py_ssize_t m)
{
    size_t counts[256];
    for (int shift = 0; shift < 64; shift += 8) {
        memset(counts, 0, sizeof(counts));
        for (Py_ssize_t r = 0; r < m; r++) {
            counts[(rows[r].cell >> shift) & 0xff]++;
        }
        if (m == 0 || counts[(rows[0].cell >> shift) & 0xff] == (size_t)m) {
            continue; /* one value of this byte: the order stays */
        }
        size_t at = 0;
        for (int k = 0; k < 256; k++) {
            size_t c = counts[k];
            counts[k] = at;
            at += c;
        }
        for (Py_ssize_t r = 0; r < m; r++) {
            tmp[counts[(rows[r].cell >> shift) & 0xff]++] = rows[r];
        }
        memcpy(rows, tmp, (size_t)m * sizeof(CellRow));
    }
}

static inline void
two_sum(double a, double b, double *s, double *e)
{
    double sum = a + b;
    double bb = sum - a;
    *e = (a - (sum - bb)) + (b - bb);
    *s = sum;
}

/* aggregate._dd_add: the accurate double-double addition. */
static inline void
dd_add(double a_hi, double a_lo, double b_hi, double b_lo, double *hi_out, double *lo_out)
{
    double s, e, t, f, hi;
    two_sum(a_hi, b_hi, &s, &e);
    two_sum(a_lo, b_lo, &t, &f);
    e += t;
    hi = s + e;
    e -= hi - s;
    e += f;
    s = hi + e;
    e -= s - hi;
    *hi_out = s;
    *lo_out = e;
}

static int
get_column(PyObject *obj, Py_buffer *view, Py_ssize_t items, Py_ssize_t itemsize,
           const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (view->len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd", name, view->len,
                     items * itemsize);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

PyObject *
fastpath_encode_cells(PyObject *module, PyObject *args)
{
    PyObject *t_obj, *w_obj, *f_obj, *c_obj, *h_obj, *cells_obj, *half_lives_obj,
        *landmarks_obj;
    Py_ssize_t m, n_res, n_families, n_categories, prof;
    if (!PyArg_ParseTuple(args, "nnOOOOOOnnOOn:encode_cells", &m, &n_res, &t_obj, &w_obj,
                          &f_obj, &c_obj, &h_obj, &cells_obj, &n_families, &n_categories,
                          &half_lives_obj, &landmarks_obj, &prof)) {
        return NULL;
    }
    Py_buffer views[6] = {{0}};
    PyObject *half_lives = NULL, *landmarks = NULL, *out = NULL, *cells_out = NULL,
             *used_f = NULL, *used_c = NULL;
    double *terms = NULL, *pow2 = NULL, *label_sums = NULL, *hour_sums = NULL;
    CellRow *order = NULL, *order_tmp = NULL;
    Py_ssize_t *label_of_family = NULL, *label_of_category = NULL, *label_count = NULL,
               *touched = NULL;
    double *half = NULL;
    int64_t *marks = NULL;
    int hour_used[168], hours_seen[168];
    if (m < 0 || n_res < 1 || n_families < 0 || n_categories < 0) {
        PyErr_SetString(PyExc_ValueError, "bad sizes");
        return NULL;
    }
    if (get_column(t_obj, &views[0], m, 8, "t_s") < 0 ||
        get_column(w_obj, &views[1], m, 8, "weight") < 0 ||
        get_column(f_obj, &views[2], m, 8, "family") < 0 ||
        get_column(c_obj, &views[3], m, 8, "category") < 0 ||
        get_column(h_obj, &views[4], m, 8, "hour_of_week") < 0 ||
        get_column(cells_obj, &views[5], m * n_res, 8, "cells") < 0) {
        goto done;
    }
    const double *t_s = views[0].buf, *weight = views[1].buf;
    const int64_t *family = views[2].buf, *category = views[3].buf, *how = views[4].buf;
    const uint64_t *cells = views[5].buf;
    half_lives = PySequence_Fast(half_lives_obj, "half_lives must be a sequence");
    landmarks = PySequence_Fast(landmarks_obj, "landmarks must be a sequence");
    if (half_lives == NULL || landmarks == NULL) {
        goto done;
    }
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(half_lives);
    if (nh < 1 || PySequence_Fast_GET_SIZE(landmarks) != nh || prof < 0 || prof >= nh) {
        PyErr_SetString(PyExc_ValueError, "horizons, landmarks and the profile do not match");
        goto done;
    }
    half = PyMem_Malloc(nh * sizeof(double));
    marks = PyMem_Malloc(nh * sizeof(int64_t));
    if (half == NULL || marks == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nh; k++) {
        half[k] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(half_lives, k));
        marks[k] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(landmarks, k));
        if (PyErr_Occurred()) {
            goto done;
        }
    }
    for (Py_ssize_t r = 0; r < m; r++) {
        if (family[r] < 0 || family[r] >= n_families || category[r] < 0 ||
            category[r] >= n_categories || how[r] < 0 || how[r] > 167) {
            PyErr_SetString(PyExc_ValueError, "family, category or hour_of_week out of range");
            goto done;
        }
    }
    /* labels: used families then used categories, each ascending, from 1 */
    label_of_family = PyMem_Calloc(n_families + 1, sizeof(Py_ssize_t));
    label_of_category = PyMem_Calloc(n_categories + 1, sizeof(Py_ssize_t));
    used_f = PyList_New(0);
    used_c = PyList_New(0);
    if (!label_of_family || !label_of_category || !used_f || !used_c) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        goto done;
    }
    for (Py_ssize_t r = 0; r < m; r++) {
        label_of_family[family[r]] = 1;
        label_of_category[category[r]] = 1;
    }
    Py_ssize_t n_labels = 0;
    for (Py_ssize_t k = 0; k < n_families; k++) {
        if (label_of_family[k]) {
            label_of_family[k] = ++n_labels;
            PyObject *num = PyLong_FromSsize_t(k);
            if (num == NULL || PyList_Append(used_f, num) < 0) {
                Py_XDECREF(num);
                goto done;
            }
            Py_DECREF(num);
        }
    }
    for (Py_ssize_t k = 0; k < n_categories; k++) {
        if (label_of_category[k]) {
            label_of_category[k] = ++n_labels;
            PyObject *num = PyLong_FromSsize_t(k);
            if (num == NULL || PyList_Append(used_c, num) < 0) {
                Py_XDECREF(num);
                goto done;
            }
            Py_DECREF(num);
        }
    }
    /* decay.terms, row by row: ldexp(w * pow(2, x - floor(x)), floor(x) - landmark) */
    terms = PyMem_Malloc((m ? m : 1) * nh * sizeof(double));
    pow2 = PyMem_Malloc((nh ? nh : 1) * sizeof(double));
    order = PyMem_Malloc((m ? m : 1) * sizeof(CellRow));
    order_tmp = PyMem_Malloc((m ? m : 1) * sizeof(CellRow));
    label_sums = PyMem_Calloc((n_labels + 1) * nh, sizeof(double));
    label_count = PyMem_Calloc(n_labels + 1, sizeof(Py_ssize_t));
    touched = PyMem_Malloc((n_labels + 1) * sizeof(Py_ssize_t));
    hour_sums = PyMem_Calloc(168, sizeof(double));
    if (!terms || !pow2 || !order || !order_tmp || !label_sums || !label_count || !touched || !hour_sums) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r < m; r++) {
        /* rows of one instant (time-ordered input repeats them) share the
         * pow() calls: the same values, so the same terms bit for bit */
        int same_time = r > 0 && t_s[r] == t_s[r - 1];
        for (Py_ssize_t k = 0; k < nh; k++) {
            double x = t_s[r] / half[k];
            double n_whole = floor(x);
            double e = n_whole - (double)marks[k];
            int exponent = e > 100000.0 ? 100000 : e < -100000.0 ? -100000 : (int)e;
            if (!same_time) {
                pow2[k] = libm_pow(2.0, x - n_whole);
            }
            terms[r * nh + k] = ldexp(weight[r] * pow2[k], exponent);
        }
    }
    cells_out = PyList_New(0);
    if (cells_out == NULL) {
        goto done;
    }
    memset(hour_used, 0, sizeof(hour_used));
    for (Py_ssize_t j = 0; j < n_res; j++) {
        for (Py_ssize_t r = 0; r < m; r++) {
            order[r].cell = cells[r * n_res + j];
            order[r].row = r;
        }
        sort_by_cell(order, order_tmp, m);
        Py_ssize_t a = 0;
        while (a < m) {
            Py_ssize_t b = a + 1;
            while (b < m && order[b].cell == order[a].cell) {
                b++;
            }
            Py_ssize_t n_touched = 0, n_hours = 0;
            double last = t_s[order[a].row];
            double hi[64], lo[64];
            double *hi_p = nh <= 64 ? hi : PyMem_Malloc(2 * nh * sizeof(double));
            if (hi_p == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            double *lo_p = nh <= 64 ? lo : hi_p + nh;
            /* Totals in double-double, row by row (numpy sums them in a
             * pairwise tree): both are within ~2**-100 of the exact sum of
             * these positive terms, so the normalised hi agrees and lo
             * differs at most in its last bits. */
            for (Py_ssize_t k = 0; k < nh; k++) {
                hi_p[k] = terms[order[a].row * nh + k];
                lo_p[k] = 0.0;
            }
            for (Py_ssize_t q = a; q < b; q++) {
                Py_ssize_t r = order[q].row;
                const double *v = terms + r * nh;
                if (q > a) {
                    if (t_s[r] > last) {
                        last = t_s[r];
                    }
                    for (Py_ssize_t k = 0; k < nh; k++) {
                        dd_add(hi_p[k], lo_p[k], v[k], 0.0, &hi_p[k], &lo_p[k]);
                    }
                }
                Py_ssize_t labels[2] = {label_of_family[family[r]],
                                        label_of_category[category[r]]};
                for (int z = 0; z < 2; z++) {
                    Py_ssize_t l = labels[z];
                    if (label_count[l]++ == 0) {
                        touched[n_touched++] = l;
                    }
                    for (Py_ssize_t k = 0; k < nh; k++) {
                        label_sums[l * nh + k] += v[k];
                    }
                }
                if (!hour_used[how[r]]) {
                    hour_used[how[r]] = 1;
                    hours_seen[n_hours++] = (int)how[r];
                }
                hour_sums[how[r]] += v[prof];
            }
            for (Py_ssize_t k = 0; k < nh; k++) {
                two_sum(hi_p[k], lo_p[k], &hi_p[k], &lo_p[k]);
            }
            /* entries ascending by label (few per cell: insertion sort) */
            for (Py_ssize_t x = 1; x < n_touched; x++) {
                Py_ssize_t l = touched[x], y = x;
                while (y > 0 && touched[y - 1] > l) {
                    touched[y] = touched[y - 1];
                    y--;
                }
                touched[y] = l;
            }
            Py_ssize_t size = 4 + 2 * nh + n_touched * (2 + nh) + 2 * n_hours;
            PyObject *blob = PyBytes_FromStringAndSize(NULL, size * 8);
            char hex[24];
            PyObject *name = PyUnicode_FromStringAndSize(hex, put_hex(hex, order[a].cell));
            PyObject *pair = NULL;
            if (blob != NULL && name != NULL) {
                double *p = (double *)PyBytes_AS_STRING(blob);
                *p++ = (double)(b - a);
                *p++ = last;
                for (Py_ssize_t k = 0; k < nh; k++) {
                    *p++ = hi_p[k];
                }
                for (Py_ssize_t k = 0; k < nh; k++) {
                    *p++ = lo_p[k];
                }
                *p++ = (double)n_touched;
                *p++ = (double)n_hours;
                for (Py_ssize_t x = 0; x < n_touched; x++) {
                    Py_ssize_t l = touched[x];
                    *p++ = (double)l;
                    *p++ = (double)label_count[l];
                    for (Py_ssize_t k = 0; k < nh; k++) {
                        *p++ = label_sums[l * nh + k];
                        label_sums[l * nh + k] = 0.0;
                    }
                    label_count[l] = 0;
                }
                for (Py_ssize_t x = 1; x < n_hours; x++) { /* ascending: insertion sort */
                    int hour = hours_seen[x];
                    Py_ssize_t y = x;
                    while (y > 0 && hours_seen[y - 1] > hour) {
                        hours_seen[y] = hours_seen[y - 1];
                        y--;
                    }
                    hours_seen[y] = hour;
                }
                for (Py_ssize_t x = 0; x < n_hours; x++) {
                    int hour = hours_seen[x];
                    *p++ = (double)hour;
                    *p++ = hour_sums[hour];
                    hour_used[hour] = 0;
                    hour_sums[hour] = 0.0;
                }
                pair = PyTuple_Pack(2, name, blob);
            }
            if (hi_p != hi) {
                PyMem_Free(hi_p);
            }
            Py_XDECREF(blob);
            Py_XDECREF(name);
            if (pair == NULL || PyList_Append(cells_out, pair) < 0) {
                Py_XDECREF(pair);
                goto done;
            }
            Py_DECREF(pair);
            a = b;
        }
    }
    out = PyTuple_Pack(3, used_f, used_c, cells_out);
done:
    for (int k = 0; k < 6; k++) {
        if (views[k].obj != NULL) {
            PyBuffer_Release(&views[k]);
        }
    }
    Py_XDECREF(half_lives);
    Py_XDECREF(landmarks);
    Py_XDECREF(cells_out);
    Py_XDECREF(used_f);
    Py_XDECREF(used_c);
    PyMem_Free(terms);
    PyMem_Free(pow2);
    PyMem_Free(order);
    PyMem_Free(order_tmp);
    PyMem_Free(label_sums);
    PyMem_Free(label_count);
    PyMem_Free(touched);
    PyMem_Free(hour_sums);
    PyMem_Free(label_of_family);
    PyMem_Free(label_of_category);
    PyMem_Free(half);
    PyMem_Free(marks);
    return out;
}
