/* The worker's per-batch kernel in C: the common case only.
 *
 * Kernel.parse takes raw message values and returns, for each record it is
 * sure of, exactly what streamer.core.events.parse_record followed by
 * Scorer.contribution would make of it (bit for bit); every other record is
 * left to the Python code (its index goes to `rest`). Whatever needs a rule
 * that lives in Python (time-zone offsets, the weighing, the area, the hour
 * of the week at unsteady hours) is asked of Python through callables and
 * memoised here.
 *
 * streamer/core/fastpath.py is the typed face; read it first.
 */
#include "fastpath.h"

#define MAX_TEXT_CHARS 128
#define MIN_TIME_S 0.0
#define MAX_TIME_S 7289654400.0
#define NULL_ISLAND_DEG 1e-9
#define MAX_RESOLUTIONS 16
#define US_PER_S 1000000LL
#define US_PER_HOUR 3600000000LL
#define SEP '\x1f'

/* Bounded memos: emptied when half full (police records repeat places,
 * categories and hours, so they stay small in practice). */
#define POINT_CAPACITY (1u << 19) /* ~260k points kept, like the Scorer memo */
#define HOUR_CAPACITY (1u << 17) /* ~65k hours kept (7 years of UTC hours: a replay of years) */
#define WEIGHING_MAX 65536

typedef uint64_t (*h3_latlng_to_cell_fn)(double, double, int, int);

static const char H3_CAPSULE_NAME[] = "H3Index (double, double, int, int __pyx_skip_dispatch)";

/* ---------------------------------------------------------------------------
 * int64 -> int64 memo (open addressing, INT64_MIN marks an empty slot)
 */

typedef struct {
    int64_t *keys;
    int64_t *values;
    size_t capacity; /* a power of two */
    size_t count;
} I64Map;

static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static int
i64map_init(I64Map *m, size_t capacity)
{
    m->keys = PyMem_Malloc(capacity * sizeof(int64_t));
    m->values = PyMem_Malloc(capacity * sizeof(int64_t));
    if (m->keys == NULL || m->values == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    m->capacity = capacity;
    m->count = 0;
    for (size_t i = 0; i < capacity; i++) {
        m->keys[i] = INT64_MIN;
    }
    return 0;
}

static void
i64map_free(I64Map *m)
{
    PyMem_Free(m->keys);
    PyMem_Free(m->values);
    m->keys = m->values = NULL;
}

static int
i64map_get(const I64Map *m, int64_t key, int64_t *value)
{
    size_t mask = m->capacity - 1;
    size_t i = (size_t)mix64((uint64_t)key) & mask;
    while (m->keys[i] != INT64_MIN) {
        if (m->keys[i] == key) {
            *value = m->values[i];
            return 1;
        }
        i = (i + 1) & mask;
    }
    return 0;
}

static void
i64map_put(I64Map *m, int64_t key, int64_t value)
{
    if (key == INT64_MIN) {
        return; /* never stored: looked up again next time */
    }
    if (m->count >= m->capacity / 2) {
        for (size_t k = 0; k < m->capacity; k++) {
            m->keys[k] = INT64_MIN;
        }
        m->count = 0;
    }
    size_t mask = m->capacity - 1;
    size_t i = (size_t)mix64((uint64_t)key) & mask;
    while (m->keys[i] != INT64_MIN && m->keys[i] != key) {
        i = (i + 1) & mask;
    }
    if (m->keys[i] == INT64_MIN) {
        m->count++;
    }
    m->keys[i] = key;
    m->values[i] = value;
}

/* ---------------------------------------------------------------------------
 * The weighing of a (raw category, origin), as Scorer._weighing gives it
 */

typedef struct {
    double weight;
    PyObject *weight_repr; /* repr(weight) (ASCII) */
    PyObject *family;      /* cleaned */
    PyObject *category;    /* cleaned */
    PyObject *middle;      /* family + SEP + category */
    int known;             /* raw category in scorer.weights.rules */
    Py_ssize_t family_id;  /* number of the cleaned family name (global) */
    Py_ssize_t category_id;
} Weighing;

/* ---------------------------------------------------------------------------
 * The Kernel type
 */

typedef struct {
    PyObject_HEAD
    PyObject *loads;
    Py_ssize_t max_payload_bytes;
    double max_future_skew_s;
    PyObject *area_contains; /* or Py_None */
    PyObject *naive_offset_us;
    PyObject *weigh;
    PyObject *steady_hour_of_week;
    PyObject *hour_of_week;
    PyObject *h3_py;
    h3_latlng_to_cell_fn h3_c; /* or NULL: call h3_py */
    int n_res;
    int resolutions[MAX_RESOLUTIONS];

    /* points (exact lat/lon bits) -> cells */
    uint64_t *point_keys; /* 2 per slot */
    uint64_t *point_cells; /* n_res per slot */
    unsigned char *point_used;
    size_t point_count;

    I64Map hours;   /* UTC hour -> hour of week (-1: unsteady) */
    I64Map offsets; /* local hour of a naive time -> offset in us (INT64_MIN: unsteady) */

    PyObject *weigh_by_origin[2]; /* dict: raw category -> int (index into weighings) */
    Weighing *weighings;
    Py_ssize_t n_weighings, cap_weighings;
    PyObject *family_ids;   /* dict: cleaned family -> int */
    PyObject *category_ids; /* dict: cleaned category -> int */
    /* per batch: the batch's number of a family/category id, valid when its
     * stamp is the batch's generation */
    Py_ssize_t *family_slot, *category_slot;
    uint64_t *family_stamp, *category_stamp;
    Py_ssize_t cap_family_ids, cap_category_ids;
    uint64_t generation;
} Kernel;

static PyObject *KEY_OP, *KEY_ID, *KEY_KIND, *KEY_ORIGIN, *KEY_CATEGORY, *KEY_PRIORITY;
static PyObject *KEY_OCCURRED_AT, *KEY_LAT, *KEY_LON;

static void
weighings_clear(Kernel *self)
{
    for (Py_ssize_t i = 0; i < self->n_weighings; i++) {
        Weighing *w = &self->weighings[i];
        Py_CLEAR(w->weight_repr);
        Py_CLEAR(w->family);
        Py_CLEAR(w->category);
        Py_CLEAR(w->middle);
    }
    self->n_weighings = 0;
    if (self->weigh_by_origin[0] != NULL) {
        PyDict_Clear(self->weigh_by_origin[0]);
        PyDict_Clear(self->weigh_by_origin[1]);
        PyDict_Clear(self->family_ids);
        PyDict_Clear(self->category_ids);
    }
}

static int
Kernel_traverse(Kernel *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loads);
    Py_VISIT(self->area_contains);
    Py_VISIT(self->naive_offset_us);
    Py_VISIT(self->weigh);
    Py_VISIT(self->steady_hour_of_week);
    Py_VISIT(self->hour_of_week);
    Py_VISIT(self->h3_py);
    return 0;
}

static int
Kernel_clear(Kernel *self)
{
    Py_CLEAR(self->loads);
    Py_CLEAR(self->area_contains);
    Py_CLEAR(self->naive_offset_us);
    Py_CLEAR(self->weigh);
    Py_CLEAR(self->steady_hour_of_week);
    Py_CLEAR(self->hour_of_week);
    Py_CLEAR(self->h3_py);
    return 0;
}

static void
Kernel_dealloc(Kernel *self)
{
    PyObject_GC_UnTrack(self);
    Kernel_clear(self);
    weighings_clear(self);
    Py_CLEAR(self->weigh_by_origin[0]);
    Py_CLEAR(self->weigh_by_origin[1]);
    Py_CLEAR(self->family_ids);
    Py_CLEAR(self->category_ids);
    PyMem_Free(self->weighings);
    PyMem_Free(self->family_slot);
    PyMem_Free(self->category_slot);
    PyMem_Free(self->family_stamp);
    PyMem_Free(self->category_stamp);
    PyMem_Free(self->point_keys);
    PyMem_Free(self->point_cells);
    PyMem_Free(self->point_used);
    i64map_free(&self->hours);
    i64map_free(&self->offsets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Kernel_init(Kernel *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {
        "loads", "max_payload_bytes", "max_future_skew_s", "area_contains",
        "naive_offset_us", "weigh", "steady_hour_of_week", "hour_of_week",
        "resolutions", "h3_capsule", "h3_py", NULL,
    };
    PyObject *loads, *area, *naive, *weigh, *steady, *how, *resolutions, *capsule, *h3_py;
    Py_ssize_t max_bytes;
    double skew;
    if (self->loads != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OndOOOOOOOO:Kernel", names, &loads,
                                     &max_bytes, &skew, &area, &naive, &weigh, &steady,
                                     &how, &resolutions, &capsule, &h3_py)) {
        return -1;
    }
    PyObject *res = PySequence_Fast(resolutions, "resolutions must be a sequence");
    if (res == NULL) {
        return -1;
    }
    Py_ssize_t n_res = PySequence_Fast_GET_SIZE(res);
    if (n_res < 1 || n_res > MAX_RESOLUTIONS) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_ValueError, "between 1 and 16 resolutions are supported");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_res; i++) {
        long r = PyLong_AsLong(PySequence_Fast_GET_ITEM(res, i));
        if (r == -1 && PyErr_Occurred()) {
            Py_DECREF(res);
            return -1;
        }
        if (r < 0 || r > 15) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_ValueError, "resolutions must be in 0..15");
            return -1;
        }
        self->resolutions[i] = (int)r;
    }
    Py_DECREF(res);
    self->n_res = (int)n_res;
    self->h3_c = NULL;
    if (capsule != Py_None && PyCapsule_IsValid(capsule, H3_CAPSULE_NAME)) {
        self->h3_c = (h3_latlng_to_cell_fn)PyCapsule_GetPointer(capsule, H3_CAPSULE_NAME);
    }
    PyErr_Clear();
    self->max_payload_bytes = max_bytes;
    self->max_future_skew_s = skew;
    Py_INCREF(loads);
    self->loads = loads;
    Py_INCREF(area);
    self->area_contains = area;
    Py_INCREF(naive);
    self->naive_offset_us = naive;
    Py_INCREF(weigh);
    self->weigh = weigh;
    Py_INCREF(steady);
    self->steady_hour_of_week = steady;
    Py_INCREF(how);
    self->hour_of_week = how;
    Py_INCREF(h3_py);
    self->h3_py = h3_py;

    self->point_keys = PyMem_Calloc(2 * (size_t)POINT_CAPACITY, sizeof(uint64_t));
    self->point_cells = PyMem_Calloc((size_t)n_res * POINT_CAPACITY, sizeof(uint64_t));
    self->point_used = PyMem_Calloc(POINT_CAPACITY, 1);
    if (!self->point_keys || !self->point_cells || !self->point_used) {
        PyErr_NoMemory();
        return -1;
    }
    self->point_count = 0;
    if (i64map_init(&self->hours, HOUR_CAPACITY) < 0 ||
        i64map_init(&self->offsets, HOUR_CAPACITY) < 0) {
        return -1;
    }
    self->weigh_by_origin[0] = PyDict_New();
    self->weigh_by_origin[1] = PyDict_New();
    self->family_ids = PyDict_New();
    self->category_ids = PyDict_New();
    if (!self->weigh_by_origin[0] || !self->weigh_by_origin[1] || !self->family_ids ||
        !self->category_ids) {
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Field checks
 */

/* An exact str of 1..128 code points. */
static int
is_text(PyObject *v)
{
    if (!PyUnicode_CheckExact(v)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    return n > 0 && n <= MAX_TEXT_CHARS;
}

static int
equals_ascii(PyObject *v, const char *text)
{
    return PyUnicode_CheckExact(v) && PyUnicode_CompareWithASCIIString(v, text) == 0;
}

/* An exact int fitting int64 (bool is not an exact int). */
static int
as_int64(PyObject *v, long long *out)
{
    if (!PyLong_CheckExact(v)) {
        return 0;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow != 0 || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = x;
    return 1;
}

static int
as_degrees(PyObject *v, double *out)
{
    long long x;
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (as_int64(v, &x)) {
        *out = (double)x; /* rounds to nearest, as float(int) does */
        return 1;
    }
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
digits(const unsigned char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* YYYY-MM-DDTHH:MM:SS[.fff|.ffffff][Z|+HH:MM|-HH:MM]: microseconds of the
 * wall-clock time since 1970-01-01T00:00, and whether (and which) offset was
 * given. Anything else: 0 (datetime.fromisoformat decides it in Python). */
static int
parse_iso(const unsigned char *s, Py_ssize_t n, int64_t *local_us, int *aware, int64_t *offset_us)
{
    int year, month, day, hour, minute, second, frac = 0;
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n < 19 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') {
        return 0;
    }
    if (!digits(s, 4, &year) || !digits(s + 5, 2, &month) || !digits(s + 8, 2, &day) ||
        !digits(s + 11, 2, &hour) || !digits(s + 14, 2, &minute) ||
        !digits(s + 17, 2, &second)) {
        return 0;
    }
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 ||
        second > 59) {
        return 0;
    }
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > month_days[month - 1] + (month == 2 && leap)) {
        return 0;
    }
    Py_ssize_t i = 19;
    if (i < n && s[i] == '.') {
        Py_ssize_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        Py_ssize_t count = i - start;
        if (count == 3) {
            digits(s + start, 3, &frac);
            frac *= 1000;
        }
        else if (count == 6) {
            digits(s + start, 6, &frac);
        }
        else {
            return 0;
        }
    }
    *aware = 0;
    *offset_us = 0;
    if (i < n) {
        if (s[i] == 'Z' && i + 1 == n) {
            *aware = 1;
        }
        else if ((s[i] == '+' || s[i] == '-') && i + 6 == n && s[i + 3] == ':') {
            int oh, om;
            if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 ||
                om > 59) {
                return 0;
            }
            *aware = 1;
            *offset_us = ((int64_t)oh * 3600 + om * 60) * US_PER_S;
            if (s[i] == '-') {
                *offset_us = -*offset_us;
            }
        }
        else {
            return 0;
        }
    }
    int64_t days = days_from_civil(year, month, day);
    *local_us = ((days * 86400 + hour * 3600 + minute * 60 + second) * US_PER_S) + frac;
    return 1;
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* The zone offset (us) of naive local times in the hour holding local_us,
 * when steady through that hour; 0 with *ok = 0 otherwise. */
static int64_t
naive_offset(Kernel *self, int64_t local_us, int *ok)
{
    int64_t hour = floor_div(local_us, US_PER_HOUR);
    int64_t offset;
    *ok = 0;
    if (!i64map_get(&self->offsets, hour, &offset)) {
        offset = INT64_MIN;
        PyObject *h = PyLong_FromLongLong(hour);
        PyObject *r = h ? PyObject_CallOneArg(self->naive_offset_us, h) : NULL;
        Py_XDECREF(h);
        if (r == NULL) {
            PyErr_Clear();
            return 0; /* not remembered: Python decides each such record */
        }
        if (r != Py_None) {
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(r, &overflow);
            if (overflow == 0 && !(v == -1 && PyErr_Occurred()) && v != INT64_MIN) {
                offset = v;
            }
            PyErr_Clear();
        }
        Py_DECREF(r);
        i64map_put(&self->offsets, hour, offset);
    }
    if (offset == INT64_MIN) {
        return 0;
    }
    *ok = 1;
    return offset;
}

/* occurred_at as POSIX seconds, exactly as events._occurred_at computes it;
 * 0 when not sure or not valid. Times at or before the epoch are deferred
 * (-0.0 would need care downstream). */
static int
occurred_at(Kernel *self, PyObject *v, double now_s, double *out)
{
    double seconds;
    if (PyUnicode_CheckExact(v)) {
        if (!PyUnicode_IS_ASCII(v)) {
            return 0;
        }
        int64_t local_us, offset_us, us;
        int aware, ok;
        if (!parse_iso(PyUnicode_1BYTE_DATA(v), PyUnicode_GET_LENGTH(v), &local_us, &aware,
                       &offset_us)) {
            return 0;
        }
        if (!aware) {
            offset_us = naive_offset(self, local_us, &ok);
            if (!ok) {
                return 0;
            }
        }
        us = local_us - offset_us;
        /* both exact (|us| < 2**53 in range), so the quotient is correctly
         * rounded, as timedelta division and total_seconds() are */
        if (us <= 0 || us >= (int64_t)MAX_TIME_S * US_PER_S) {
            return 0;
        }
        seconds = (double)us / 1e6;
    }
    else if (PyFloat_CheckExact(v)) {
        seconds = PyFloat_AS_DOUBLE(v);
    }
    else {
        long long x;
        if (!as_int64(v, &x) || x <= 0 || x >= (long long)MAX_TIME_S) {
            return 0;
        }
        seconds = (double)x;
    }
    if (!(seconds > MIN_TIME_S && seconds < MAX_TIME_S) ||
        seconds > now_s + self->max_future_skew_s) {
        return 0;
    }
    *out = seconds;
    return 1;
}

/* Scorer.hour_of_week, its memo rule reproduced; -1 when Python failed. */
static long
hour_of_week(Kernel *self, double t_s)
{
    double into_hour_s = fmod(t_s, 3600.0); /* t_s > 0: Python's % */
    if (into_hour_s == 0.0 || (1e-3 <= into_hour_s && into_hour_s <= 3600.0 - 1e-3)) {
        int64_t hour = (int64_t)floor(t_s / 3600.0);
        int64_t how;
        if (!i64map_get(&self->hours, hour, &how)) {
            PyObject *h = PyLong_FromLongLong(hour);
            PyObject *r = h ? PyObject_CallOneArg(self->steady_hour_of_week, h) : NULL;
            Py_XDECREF(h);
            if (r == NULL) {
                PyErr_Clear();
                return -1;
            }
            how = PyLong_AsLongLong(r);
            Py_DECREF(r);
            if (PyErr_Occurred() || how < -1 || how > 167) {
                PyErr_Clear();
                return -1;
            }
            i64map_put(&self->hours, hour, how);
        }
        if (how >= 0) {
            return (long)how;
        }
    }
    PyObject *t = PyFloat_FromDouble(t_s);
    PyObject *r = t ? PyObject_CallOneArg(self->hour_of_week, t) : NULL;
    Py_XDECREF(t);
    if (r == NULL) {
        PyErr_Clear();
        return -1;
    }
    long how = PyLong_AsLong(r);
    Py_DECREF(r);
    if (PyErr_Occurred() || how < 0 || how > 167) {
        PyErr_Clear();
        return -1;
    }
    return how;
}

/* The cells of a point at every resolution (memoised); 0 on an H3 error. */
static int
cells_of(Kernel *self, double lat, double lon, uint64_t *out)
{
    uint64_t a, b;
    memcpy(&a, &lat, 8);
    memcpy(&b, &lon, 8);
    size_t mask = POINT_CAPACITY - 1;
    size_t i = (size_t)mix64(a ^ mix64(b)) & mask;
    int n_res = self->n_res;
    while (self->point_used[i]) {
        if (self->point_keys[2 * i] == a && self->point_keys[2 * i + 1] == b) {
            memcpy(out, self->point_cells + i * n_res, n_res * sizeof(uint64_t));
            return 1;
        }
        i = (i + 1) & mask;
    }
    for (int r = 0; r < n_res; r++) {
        if (self->h3_c != NULL) {
            uint64_t c = self->h3_c(lat, lon, self->resolutions[r], 0);
            if (c == 1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            out[r] = c;
        }
        else {
            PyObject *c = PyObject_CallFunction(self->h3_py, "ddi", lat, lon,
                                                self->resolutions[r]);
            if (c == NULL) {
                PyErr_Clear();
                return 0;
            }
            out[r] = PyLong_AsUnsignedLongLong(c);
            Py_DECREF(c);
            if (PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
        }
    }
    if (self->point_count >= POINT_CAPACITY / 2) {
        memset(self->point_used, 0, POINT_CAPACITY);
        self->point_count = 0;
        i = (size_t)mix64(a ^ mix64(b)) & mask;
    }
    self->point_used[i] = 1;
    self->point_keys[2 * i] = a;
    self->point_keys[2 * i + 1] = b;
    memcpy(self->point_cells + i * n_res, out, n_res * sizeof(uint64_t));
    self->point_count++;
    return 1;
}

static Py_ssize_t
name_id(PyObject *ids, PyObject *name)
{
    PyObject *found = PyDict_GetItemWithError(ids, name);
    if (found != NULL) {
        return PyLong_AsSsize_t(found);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t id = PyDict_GET_SIZE(ids);
    PyObject *num = PyLong_FromSsize_t(id);
    if (num == NULL || PyDict_SetItem(ids, name, num) < 0) {
        Py_XDECREF(num);
        return -1;
    }
    Py_DECREF(num);
    return id;
}

/* The weighing of (raw category, origin); NULL when Python declines it. */
static Weighing *
weighing_of(Kernel *self, PyObject *category, int origin)
{
    PyObject *memo = self->weigh_by_origin[origin];
    PyObject *found = PyDict_GetItemWithError(memo, category);
    if (found != NULL) {
        Py_ssize_t k = PyLong_AsSsize_t(found);
        return k < 0 ? NULL : &self->weighings[k];
    }
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *r = PyObject_CallFunction(self->weigh, "Os", category,
                                        origin ? "proactive" : "reported");
    Py_ssize_t k = -1;
    if (r == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (r != Py_None) {
        /* (weight, repr(weight), family, category, family SEP category, known) */
        PyObject *weight, *weight_repr, *family, *cleaned, *middle, *known;
        if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 6) {
            Py_DECREF(r);
            return NULL;
        }
        weight = PyTuple_GET_ITEM(r, 0);
        weight_repr = PyTuple_GET_ITEM(r, 1);
        family = PyTuple_GET_ITEM(r, 2);
        cleaned = PyTuple_GET_ITEM(r, 3);
        middle = PyTuple_GET_ITEM(r, 4);
        known = PyTuple_GET_ITEM(r, 5);
        if (!PyFloat_CheckExact(weight) || !PyUnicode_CheckExact(weight_repr) ||
            !PyUnicode_IS_ASCII(weight_repr) || !PyUnicode_CheckExact(family) ||
            !PyUnicode_CheckExact(cleaned) || !PyUnicode_CheckExact(middle)) {
            Py_DECREF(r);
            return NULL;
        }
        if (self->n_weighings == self->cap_weighings) {
            Py_ssize_t cap = self->cap_weighings ? 2 * self->cap_weighings : 64;
            Weighing *grown = PyMem_Realloc(self->weighings, cap * sizeof(Weighing));
            if (grown == NULL) {
                Py_DECREF(r);
                return NULL;
            }
            self->weighings = grown;
            self->cap_weighings = cap;
        }
        Py_ssize_t family_id = name_id(self->family_ids, family);
        Py_ssize_t category_id = family_id < 0 ? -1 : name_id(self->category_ids, cleaned);
        if (category_id < 0) {
            PyErr_Clear();
            Py_DECREF(r);
            return NULL;
        }
        k = self->n_weighings;
        Weighing *w = &self->weighings[k];
        w->weight = PyFloat_AS_DOUBLE(weight);
        Py_INCREF(weight_repr);
        w->weight_repr = weight_repr;
        Py_INCREF(family);
        w->family = family;
        Py_INCREF(cleaned);
        w->category = cleaned;
        Py_INCREF(middle);
        w->middle = middle;
        w->known = PyObject_IsTrue(known) == 1;
        w->family_id = family_id;
        w->category_id = category_id;
        self->n_weighings++;
    }
    Py_DECREF(r);
    PyObject *num = PyLong_FromSsize_t(k);
    if (num == NULL || PyDict_SetItem(memo, category, num) < 0) {
        PyErr_Clear();
        Py_XDECREF(num);
        return NULL;
    }
    Py_DECREF(num);
    return k < 0 ? NULL : &self->weighings[k];
}

/* The batch's number of a name id (numbered in order of first appearance). */
static Py_ssize_t
batch_slot(Kernel *self, int is_family, Py_ssize_t id, PyObject *name, PyObject *names)
{
    Py_ssize_t **slot = is_family ? &self->family_slot : &self->category_slot;
    uint64_t **stamp = is_family ? &self->family_stamp : &self->category_stamp;
    Py_ssize_t *cap = is_family ? &self->cap_family_ids : &self->cap_category_ids;
    if (id >= *cap) {
        Py_ssize_t grown = *cap ? *cap : 64;
        while (grown <= id) {
            grown *= 2;
        }
        Py_ssize_t *s = PyMem_Realloc(*slot, grown * sizeof(Py_ssize_t));
        if (s == NULL) {
            return -1;
        }
        *slot = s;
        uint64_t *t = PyMem_Realloc(*stamp, grown * sizeof(uint64_t));
        if (t == NULL) {
            return -1;
        }
        *stamp = t;
        for (Py_ssize_t k = *cap; k < grown; k++) {
            t[k] = 0;
        }
        *cap = grown;
    }
    if ((*stamp)[id] != self->generation) {
        (*stamp)[id] = self->generation;
        (*slot)[id] = PyList_GET_SIZE(names);
        if (PyList_Append(names, name) < 0) {
            return -1;
        }
    }
    return (*slot)[id];
}

int
put_hex(char *out, uint64_t x)
{
    static const char hexdigits[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = hexdigits[x & 0xf];
        x >>= 4;
    } while (x != 0);
    for (int k = 0; k < n; k++) {
        out[k] = tmp[n - 1 - k];
    }
    return n;
}

/* str(x) of a non-negative int; returns the length. */
static int
put_small_int(char *out, long x)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + x % 10);
        x /= 10;
    } while (x != 0);
    for (int k = 0; k < n; k++) {
        out[k] = tmp[n - 1 - k];
    }
    return n;
}

/* The packed ledger form: repr(t) US repr(w) US family US category US how US cells. */
static PyObject *
packed_of(double t_s, Weighing *w, long how, const uint64_t *cells, int n_res)
{
    char head[64], tail[32 + 17 * MAX_RESOLUTIONS];
    Py_ssize_t w_len = PyUnicode_GET_LENGTH(w->weight_repr);
    size_t t_len;
    if (t_s > 0.0 && t_s < 1e15 && t_s == floor(t_s)) {
        /* most records carry whole seconds: repr() of a whole double below
         * 1e16 is its integer digits and ".0" (no dtoa needed) */
        t_len = (size_t)put_small_int(head, (long)t_s);
        head[t_len++] = '.';
        head[t_len++] = '0';
    }
    else {
        char *t_repr = PyOS_double_to_string(t_s, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (t_repr == NULL) {
            return NULL;
        }
        t_len = strlen(t_repr);
        if (t_len + (size_t)w_len + 2 > sizeof(head)) {
            PyMem_Free(t_repr);
            PyErr_SetString(PyExc_ValueError, "float repr too long");
            return NULL;
        }
        memcpy(head, t_repr, t_len);
        PyMem_Free(t_repr);
    }
    if (t_len + (size_t)w_len + 2 > sizeof(head)) {
        PyErr_SetString(PyExc_ValueError, "float repr too long");
        return NULL;
    }
    head[t_len] = SEP;
    memcpy(head + t_len + 1, PyUnicode_1BYTE_DATA(w->weight_repr), (size_t)w_len);
    size_t head_len = t_len + 1 + (size_t)w_len;
    head[head_len++] = SEP;
    int tail_len = 0;
    tail[tail_len++] = SEP;
    tail_len += put_small_int(tail + tail_len, how); /* 0..167 */
    for (int r = 0; r < n_res; r++) {
        tail[tail_len++] = SEP;
        tail_len += put_hex(tail + tail_len, cells[r]);
    }
    PyObject *middle = w->middle;
    if (PyUnicode_IS_ASCII(middle)) {
        Py_ssize_t m_len = PyUnicode_GET_LENGTH(middle);
        PyObject *out = PyUnicode_New((Py_ssize_t)head_len + m_len + tail_len, 127);
        if (out == NULL) {
            return NULL;
        }
        char *p = (char *)PyUnicode_1BYTE_DATA(out);
        memcpy(p, head, head_len);
        memcpy(p + head_len, PyUnicode_1BYTE_DATA(middle), (size_t)m_len);
        memcpy(p + head_len + m_len, tail, (size_t)tail_len);
        return out;
    }
    PyObject *a = PyUnicode_FromStringAndSize(head, (Py_ssize_t)head_len);
    PyObject *c = PyUnicode_FromStringAndSize(tail, tail_len);
    PyObject *out = NULL;
    if (a != NULL && c != NULL) {
        PyObject *ab = PyUnicode_Concat(a, middle);
        if (ab != NULL) {
            out = PyUnicode_Concat(ab, c);
            Py_DECREF(ab);
        }
    }
    Py_XDECREF(a);
    Py_XDECREF(c);
    return out;
}

/* ---------------------------------------------------------------------------
 * Kernel.parse
 */

typedef struct {
    char *data;
    size_t len, cap;
} Buffer;

static int
buffer_add(Buffer *b, const void *item, size_t size)
{
    if (b->len + size > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 4096;
        while (cap < b->len + size) {
            cap *= 2;
        }
        char *grown = PyMem_Realloc(b->data, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, item, size);
    b->len += size;
    return 0;
}

static PyObject *
buffer_take(Buffer *b)
{
    PyObject *out = PyByteArray_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
    PyMem_Free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    return out;
}

enum { DEFER = 0, ACCEPT = 1, EXCLUDE = 2 };

typedef struct {
    PyObject *id; /* new reference */
    PyObject *raw_category; /* borrowed */
    Weighing *weighing;
    double t_s, lat, lon;
} Row;

static PyObject *
get(PyObject *obj, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(obj, key);
    return v == Py_None ? NULL : v;
}

/* What parse_record + Scorer.contribution make of a decoded object, when sure. */
static int
take(Kernel *self, PyObject *obj, double now_s, Row *row)
{
    PyObject *v;
    long long x;
    row->id = NULL;
    if ((v = get(obj, KEY_OP)) != NULL && !equals_ascii(v, "upsert")) {
        return DEFER;
    }
    if ((v = get(obj, KEY_KIND)) != NULL && !equals_ascii(v, "incident") &&
        !equals_ascii(v, "call")) {
        return DEFER;
    }
    int origin = 0;
    if ((v = get(obj, KEY_ORIGIN)) != NULL) {
        if (equals_ascii(v, "proactive")) {
            origin = 1;
        }
        else if (!equals_ascii(v, "reported")) {
            return DEFER;
        }
    }
    PyObject *category = get(obj, KEY_CATEGORY);
    if (category == NULL || !is_text(category)) {
        return DEFER;
    }
    if ((v = get(obj, KEY_PRIORITY)) != NULL && !as_int64(v, &x)) {
        return DEFER;
    }
    v = get(obj, KEY_OCCURRED_AT);
    if (v == NULL || !occurred_at(self, v, now_s, &row->t_s)) {
        return DEFER;
    }
    PyObject *lat_obj = get(obj, KEY_LAT), *lon_obj = get(obj, KEY_LON);
    double lat, lon;
    if (lat_obj == NULL || lon_obj == NULL || !as_degrees(lat_obj, &lat) ||
        !as_degrees(lon_obj, &lon)) {
        return DEFER;
    }
    if (!(-90.0 <= lat && lat <= 90.0 && -180.0 <= lon && lon <= 180.0) ||
        (-NULL_ISLAND_DEG < lat && lat < NULL_ISLAND_DEG && -NULL_ISLAND_DEG < lon &&
         lon < NULL_ISLAND_DEG)) {
        return DEFER;
    }
    if (self->area_contains != Py_None) {
        PyObject *r = PyObject_CallFunction(self->area_contains, "dd", lat, lon);
        int inside = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (inside != 1) {
            PyErr_Clear();
            return DEFER;
        }
    }
    Weighing *w = weighing_of(self, category, origin);
    if (w == NULL) {
        return DEFER;
    }
    v = get(obj, KEY_ID);
    if (v == NULL) {
        return DEFER;
    }
    if (is_text(v)) {
        Py_INCREF(v);
        row->id = v;
    }
    else if (as_int64(v, &x)) {
        row->id = PyUnicode_FromFormat("%lld", x);
        if (row->id == NULL) {
            PyErr_Clear();
            return DEFER;
        }
    }
    else {
        return DEFER;
    }
    if (PyErr_Occurred()) { /* a failed dict lookup on the way */
        PyErr_Clear();
        Py_CLEAR(row->id);
        return DEFER;
    }
    row->raw_category = category;
    row->weighing = w;
    row->lat = lat;
    row->lon = lon;
    return w->weight <= 0.0 ? EXCLUDE : ACCEPT;
}

static int
count_unknown(PyObject *unknown, PyObject *category)
{
    PyObject *found = PyDict_GetItemWithError(unknown, category);
    long long n = 0;
    if (found != NULL) {
        n = PyLong_AsLongLong(found);
    }
    else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *num = PyLong_FromLongLong(n + 1);
    if (num == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(unknown, category, num);
    Py_DECREF(num);
    return rc;
}

static PyObject *
Kernel_parse(Kernel *self, PyObject *args)
{
    PyObject *values;
    double now_s;
    if (!PyArg_ParseTuple(args, "Od:parse", &values, &now_s)) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(values, "values must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    if (self->n_weighings > WEIGHING_MAX) {
        weighings_clear(self);
    }
    self->generation++;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int n_res = self->n_res;
    Buffer index = {0}, t_col = {0}, w_col = {0}, f_col = {0}, c_col = {0}, h_col = {0},
           cell_col = {0};
    PyObject *ids = PyList_New(0), *packed = PyList_New(0), *families = PyList_New(0),
             *categories = PyList_New(0), *excluded = PyList_New(0), *unknown = PyDict_New(),
             *rest = PyList_New(0), *result = NULL;
    double newest = 0.0;
    int any = 0;
    if (!ids || !packed || !families || !categories || !excluded || !unknown || !rest) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(seq, i);
        int status = DEFER;
        Row row = {0};
        uint64_t cells[MAX_RESOLUTIONS];
        PyObject *obj = NULL;
        if (PyBytes_CheckExact(value) && PyBytes_GET_SIZE(value) <= self->max_payload_bytes) {
            obj = PyObject_CallOneArg(self->loads, value);
            if (obj == NULL) {
                PyErr_Clear();
            }
            else if (PyDict_CheckExact(obj)) {
                status = take(self, obj, now_s, &row);
                if (PyErr_Occurred()) { /* a failed look-up on the way: not sure */
                    PyErr_Clear();
                    status = DEFER;
                }
            }
        }
        long how = -1;
        if (status == ACCEPT) {
            how = hour_of_week(self, row.t_s);
            if (how < 0 || !cells_of(self, row.lat, row.lon, cells)) {
                status = DEFER;
            }
        }
        if (status != DEFER && !row.weighing->known &&
            count_unknown(unknown, row.raw_category) < 0) {
            Py_XDECREF(obj);
            Py_XDECREF(row.id);
            goto done;
        }
        Py_XDECREF(obj); /* row.raw_category is not used past here */
        if (status == DEFER) {
            Py_XDECREF(row.id);
            PyObject *k = PyLong_FromSsize_t(i);
            if (k == NULL || PyList_Append(rest, k) < 0) {
                Py_XDECREF(k);
                goto done;
            }
            Py_DECREF(k);
            continue;
        }
        if (status == EXCLUDE) {
            PyObject *pair = Py_BuildValue("(nN)", i, row.id);
            if (pair == NULL || PyList_Append(excluded, pair) < 0) {
                Py_XDECREF(pair);
                goto done;
            }
            Py_DECREF(pair);
            continue;
        }
        Weighing *w = row.weighing;
        Py_ssize_t fam = batch_slot(self, 1, w->family_id, w->family, families);
        Py_ssize_t cat = fam < 0 ? -1 : batch_slot(self, 0, w->category_id, w->category,
                                                   categories);
        PyObject *p = cat < 0 ? NULL : packed_of(row.t_s, w, how, cells, n_res);
        if (p == NULL) {
            Py_DECREF(row.id);
            goto done;
        }
        int rc = PyList_Append(packed, p);
        Py_DECREF(p);
        rc |= PyList_Append(ids, row.id);
        Py_DECREF(row.id);
        int64_t i64 = i, f64 = fam, c64 = cat, h64 = how;
        if (rc < 0 || buffer_add(&index, &i64, 8) < 0 || buffer_add(&t_col, &row.t_s, 8) < 0 ||
            buffer_add(&w_col, &w->weight, 8) < 0 || buffer_add(&f_col, &f64, 8) < 0 ||
            buffer_add(&c_col, &c64, 8) < 0 || buffer_add(&h_col, &h64, 8) < 0 ||
            buffer_add(&cell_col, cells, 8 * (size_t)n_res) < 0) {
            goto done;
        }
        if (!any || row.t_s > newest) {
            newest = row.t_s;
            any = 1;
        }
    }
    {
        PyObject *newest_obj = any ? PyFloat_FromDouble(newest) : Py_NewRef(Py_None);
        result = Py_BuildValue("(NOONNNNNNOOOOON)", buffer_take(&index), ids, packed,
                               buffer_take(&t_col), buffer_take(&w_col), buffer_take(&f_col),
                               buffer_take(&c_col), buffer_take(&h_col),
                               buffer_take(&cell_col), families, categories, excluded,
                               unknown, rest, newest_obj);
    }
done:
    PyMem_Free(index.data);
    PyMem_Free(t_col.data);
    PyMem_Free(w_col.data);
    PyMem_Free(f_col.data);
    PyMem_Free(c_col.data);
    PyMem_Free(h_col.data);
    PyMem_Free(cell_col.data);
    Py_XDECREF(ids);
    Py_XDECREF(packed);
    Py_XDECREF(families);
    Py_XDECREF(categories);
    Py_XDECREF(excluded);
    Py_XDECREF(unknown);
    Py_XDECREF(rest);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef Kernel_methods[] = {
    {"parse", (PyCFunction)Kernel_parse, METH_VARARGS,
     "parse(values, now_s) -> (index, ids, packed, t_s, weight, family, category, "
     "hour_of_week, cells, families, categories, excluded, unknown, rest, newest)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamer.core._fastpath.Kernel",
    .tp_basicsize = sizeof(Kernel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The per-batch parsing kernel (see streamer.core.fastpath).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Kernel_init,
    .tp_dealloc = (destructor)Kernel_dealloc,
    .tp_traverse = (traverseproc)Kernel_traverse,
    .tp_clear = (inquiry)Kernel_clear,
    .tp_methods = Kernel_methods,
};


int
parse_module_init(void)
{
    KEY_OP = PyUnicode_InternFromString("op");
    KEY_ID = PyUnicode_InternFromString("id");
    KEY_KIND = PyUnicode_InternFromString("kind");
    KEY_ORIGIN = PyUnicode_InternFromString("origin");
    KEY_CATEGORY = PyUnicode_InternFromString("category");
    KEY_PRIORITY = PyUnicode_InternFromString("priority");
    KEY_OCCURRED_AT = PyUnicode_InternFromString("occurred_at");
    KEY_LAT = PyUnicode_InternFromString("lat");
    KEY_LON = PyUnicode_InternFromString("lon");
    if (!KEY_OP || !KEY_ID || !KEY_KIND || !KEY_ORIGIN || !KEY_CATEGORY || !KEY_PRIORITY ||
        !KEY_OCCURRED_AT || !KEY_LAT || !KEY_LON) {
        return -1;
    }
    return 0;
}
