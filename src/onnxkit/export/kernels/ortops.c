/* BlockMatMul as an onnxruntime custom operator (domain "onnxkit"): inputs A (float, [..., K]) and
   W (uint8 records, blockmatmul.h); output Y (float, [..., N]); attributes N, K, block_size, bits,
   scale_bits, has_offset, zero_point.

   onnxruntime's C API is reached through its function table (OrtApi, from OrtGetApiBase) by slot
   number: this library is built where onnxruntime's headers are not installed, so it declares only
   what it calls. OrtApi is append-only across releases, so a slot keeps its meaning; API version 17
   (onnxruntime 1.17) is the first with KernelContext_ParallelFor, the newest slot used here. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockmatmul.h"

#define EXPORT __attribute__((visibility("default")))

typedef struct OrtStatus OrtStatus;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtValue OrtValue;
typedef struct OrtShape OrtShape; /* OrtTensorTypeAndShapeInfo */
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtApi OrtApi;     /* the function table, read by slot */

typedef struct {
    const OrtApi* (*GetApi)(uint32_t version);
    const char* (*GetVersionString)(void);
} OrtApiBase;

enum { API_VERSION = 17 };
enum { ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2 };        /* OrtErrorCode */
enum { TENSOR_FLOAT = 1, TENSOR_UINT8 = 2 };             /* ONNXTensorElementDataType */
enum {                                                   /* OrtApi slots */
    CREATE_STATUS = 0,
    CREATE_CUSTOM_OP_DOMAIN = 26,
    CUSTOM_OP_DOMAIN_ADD = 27,
    ADD_CUSTOM_OP_DOMAIN = 28,
    GET_TENSOR_MUTABLE_DATA = 51,
    GET_TENSOR_ELEMENT_TYPE = 60,
    GET_DIMENSIONS_COUNT = 61,
    GET_DIMENSIONS = 62,
    GET_TENSOR_TYPE_AND_SHAPE = 65,
    KERNEL_INFO_GET_ATTRIBUTE_INT64 = 86,
    KERNEL_CONTEXT_GET_INPUT = 90,
    KERNEL_CONTEXT_GET_OUTPUT = 91,
    RELEASE_STATUS = 93,
    RELEASE_SHAPE = 99,
    KERNEL_CONTEXT_PARALLEL_FOR = 274,
};

typedef void (*slot_fn)(void);
#define CALL(api, slot, type) ((type)(((const slot_fn*)(api))[slot]))

typedef OrtStatus* (*create_status_fn)(int, const char*);
typedef OrtStatus* (*create_domain_fn)(const char*, OrtCustomOpDomain**);
typedef OrtStatus* (*domain_add_fn)(OrtCustomOpDomain*, const void*);
typedef OrtStatus* (*add_domain_fn)(OrtSessionOptions*, OrtCustomOpDomain*);
typedef OrtStatus* (*mutable_data_fn)(OrtValue*, void**);
typedef OrtStatus* (*element_type_fn)(const OrtShape*, int*);
typedef OrtStatus* (*dims_count_fn)(const OrtShape*, size_t*);
typedef OrtStatus* (*dims_fn)(const OrtShape*, int64_t*, size_t);
typedef OrtStatus* (*type_and_shape_fn)(const OrtValue*, OrtShape**);
typedef OrtStatus* (*attribute_int64_fn)(const OrtKernelInfo*, const char*, int64_t*);
typedef OrtStatus* (*get_input_fn)(const OrtKernelContext*, size_t, const OrtValue**);
typedef OrtStatus* (*get_output_fn)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**);
typedef void (*release_fn)(void*);
typedef OrtStatus* (*parallel_for_fn)(const OrtKernelContext*, void (*)(void*, size_t), size_t, size_t, void*);

/* OrtCustomOp, as far as version 16 reads it */
typedef struct OrtCustomOp {
    uint32_t version;
    void* (*CreateKernel)(const struct OrtCustomOp*, const OrtApi*, const OrtKernelInfo*);
    const char* (*GetName)(const struct OrtCustomOp*);
    const char* (*GetExecutionProviderType)(const struct OrtCustomOp*);
    int (*GetInputType)(const struct OrtCustomOp*, size_t);
    size_t (*GetInputTypeCount)(const struct OrtCustomOp*);
    int (*GetOutputType)(const struct OrtCustomOp*, size_t);
    size_t (*GetOutputTypeCount)(const struct OrtCustomOp*);
    void (*KernelCompute)(void*, OrtKernelContext*);
    void (*KernelDestroy)(void*);
    int (*GetInputCharacteristic)(const struct OrtCustomOp*, size_t);
    int (*GetOutputCharacteristic)(const struct OrtCustomOp*, size_t);
    int (*GetInputMemoryType)(const struct OrtCustomOp*, size_t);
    int (*GetVariadicInputMinArity)(const struct OrtCustomOp*);
    int (*GetVariadicInputHomogeneity)(const struct OrtCustomOp*);
    int (*GetVariadicOutputMinArity)(const struct OrtCustomOp*);
    int (*GetVariadicOutputHomogeneity)(const struct OrtCustomOp*);
    OrtStatus* (*CreateKernelV2)(const struct OrtCustomOp*, const OrtApi*, const OrtKernelInfo*, void**);
    OrtStatus* (*KernelComputeV2)(void*, OrtKernelContext*);
} OrtCustomOp;

typedef struct {
    const OrtApi* api;
    okx_layout layout;
    size_t record;
} Kernel;

static OrtStatus* fail(const OrtApi* api, int code, const char* message) {
    return CALL(api, CREATE_STATUS, create_status_fn)(code, message);
}

static const char* attribute_names[] = {"N", "K", "block_size", "bits", "scale_bits", "has_offset", "zero_point"};

static OrtStatus* create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out) {
    (void)op;
    int64_t v[7];
    for (int i = 0; i < 7; i++) {
        OrtStatus* status = CALL(api, KERNEL_INFO_GET_ATTRIBUTE_INT64, attribute_int64_fn)(info, attribute_names[i], &v[i]);
        if (status) return status;
    }
    Kernel* k = calloc(1, sizeof *k);
    if (!k) return fail(api, ORT_FAIL, "BlockMatMul: out of memory");
    k->api = api;
    k->layout = (okx_layout){v[0], v[1], (int32_t)v[2], (int32_t)v[3], (int32_t)v[4], (int32_t)v[5], (int32_t)v[6]};
    k->record = okx_record_bytes(&k->layout);
    if (!k->record) {
        free(k);
        return fail(api, ORT_INVALID_ARGUMENT, "BlockMatMul: attributes describe no layout this kernel computes");
    }
    *out = k;
    return NULL;
}

typedef struct {
    const okx_layout* layout;
    const uint8_t* w;
    const float* a;
    int64_t rows;
    const float* sums;
    float* y;
    int64_t groups, per_task;
} Work;

static void run_task(void* data, size_t task) {
    const Work* work = data;
    int64_t g0 = (int64_t)task * work->per_task, g1 = g0 + work->per_task;
    if (g1 > work->groups) g1 = work->groups;
    if (g0 < g1) okx_groups(work->layout, work->w, work->a, work->rows, work->sums, work->y, g0, g1);
}

/* shape of an input: element type, and dims into `dims` (up to 8); returns a status on failure */
static OrtStatus* shape_of(const OrtApi* api, const OrtValue* value, int* type, int64_t* dims, size_t* rank) {
    OrtShape* shape = NULL;
    OrtStatus* status = CALL(api, GET_TENSOR_TYPE_AND_SHAPE, type_and_shape_fn)(value, &shape);
    if (!status) status = CALL(api, GET_TENSOR_ELEMENT_TYPE, element_type_fn)(shape, type);
    if (!status) status = CALL(api, GET_DIMENSIONS_COUNT, dims_count_fn)(shape, rank);
    if (!status && *rank > 8) status = fail(api, ORT_INVALID_ARGUMENT, "BlockMatMul: input of rank above 8");
    if (!status) status = CALL(api, GET_DIMENSIONS, dims_fn)(shape, dims, *rank);
    if (shape) CALL(api, RELEASE_SHAPE, release_fn)(shape);
    return status;
}

/* A summed per block, where okx_groups reads it (rows multiplied on their own, with a min); 0 or -1 */
static int block_sums(const okx_layout* l, const float* a, int64_t rows, float** out) {
    *out = NULL;
    if (!l->has_offset || rows > OKX_GEMV_ROWS) return 0;
    const int64_t count = rows * (l->k / l->block);
    float* sums = malloc(sizeof(float) * (size_t)count);
    if (!sums) return -1;
    for (int64_t b = 0; b < count; b++) {
        float s = 0.0f;
        for (int i = 0; i < l->block; i++) s += a[b * l->block + i];
        sums[b] = s;
    }
    *out = sums;
    return 0;
}

static OrtStatus* compute(void* kernel, OrtKernelContext* context) {
    const Kernel* k = kernel;
    const OrtApi* api = k->api;
    const okx_layout* l = &k->layout;
    const OrtValue *a_value = NULL, *w_value = NULL;
    OrtStatus* status = CALL(api, KERNEL_CONTEXT_GET_INPUT, get_input_fn)(context, 0, &a_value);
    if (!status) status = CALL(api, KERNEL_CONTEXT_GET_INPUT, get_input_fn)(context, 1, &w_value);
    if (status) return status;
    int a_type = 0, w_type = 0;
    int64_t dims[8], w_dims[8];
    size_t rank = 0, w_rank = 0;
    if ((status = shape_of(api, a_value, &a_type, dims, &rank))) return status;
    if ((status = shape_of(api, w_value, &w_type, w_dims, &w_rank))) return status;
    if (a_type != TENSOR_FLOAT || w_type != TENSOR_UINT8 || rank < 1 || dims[rank - 1] != l->k)
        return fail(api, ORT_INVALID_ARGUMENT, "BlockMatMul: expected A float [..., K] and W uint8 records");
    const int64_t groups = (l->n + 15) / 16, blocks = l->k / l->block;
    int64_t w_count = 1, rows = 1;
    for (size_t i = 0; i < w_rank; i++) w_count *= w_dims[i];
    if (w_count != groups * blocks * (int64_t)k->record)
        return fail(api, ORT_INVALID_ARGUMENT, "BlockMatMul: W's size does not match N, K and the layout");
    for (size_t i = 0; i + 1 < rank; i++) rows *= dims[i];
    dims[rank - 1] = l->n;
    OrtValue* y_value = NULL;
    void *a_data = NULL, *w_data = NULL, *y_data = NULL;
    status = CALL(api, KERNEL_CONTEXT_GET_OUTPUT, get_output_fn)(context, 0, dims, rank, &y_value);
    if (!status) status = CALL(api, GET_TENSOR_MUTABLE_DATA, mutable_data_fn)((OrtValue*)a_value, &a_data);
    if (!status) status = CALL(api, GET_TENSOR_MUTABLE_DATA, mutable_data_fn)((OrtValue*)w_value, &w_data);
    if (!status) status = CALL(api, GET_TENSOR_MUTABLE_DATA, mutable_data_fn)(y_value, &y_data);
    if (status || rows == 0) return status;
    float* sums = NULL;
    if (block_sums(l, a_data, rows, &sums)) return fail(api, ORT_FAIL, "BlockMatMul: out of memory");
    /* a few tasks per thread, each at least 4 row groups */
    int64_t tasks = groups / 4 < 64 ? groups / 4 : 64;
    if (tasks < 1) tasks = 1;
    Work work = {l, w_data, a_data, rows, sums, y_data, groups, (groups + tasks - 1) / tasks};
    tasks = (groups + work.per_task - 1) / work.per_task;
    if (tasks > 1) {
        status = CALL(api, KERNEL_CONTEXT_PARALLEL_FOR, parallel_for_fn)(context, run_task, (size_t)tasks, 0, &work);
    } else {
        run_task(&work, 0);
    }
    free(sums);
    return status;
}

static void destroy(void* kernel) { free(kernel); }
static const char* name(const OrtCustomOp* op) { (void)op; return "BlockMatMul"; }
static const char* provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static int input_type(const OrtCustomOp* op, size_t i) { (void)op; return i == 0 ? TENSOR_FLOAT : TENSOR_UINT8; }
static size_t two(const OrtCustomOp* op) { (void)op; return 2; }
static int output_type(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return TENSOR_FLOAT; }
static size_t one(const OrtCustomOp* op) { (void)op; return 1; }
static int required(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return 0; }
static int default_memory(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return 0; }
static int arity(const OrtCustomOp* op) { (void)op; return 1; }
static int homogeneous(const OrtCustomOp* op) { (void)op; return 1; }

static const OrtCustomOp block_matmul = {
    16, NULL, name, provider, input_type, two, output_type, one, NULL, destroy, required, required,
    default_memory, arity, homogeneous, arity, homogeneous, create_kernel, compute,
};

/* One domain for the process, made by the first session that registers the library: sessions keep
   pointing at it, so it is never released, and every later session adds the same one. */
static pthread_mutex_t domain_lock = PTHREAD_MUTEX_INITIALIZER;
static OrtCustomOpDomain* domain = NULL;

EXPORT OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
    const OrtApi* api = base->GetApi(API_VERSION);
    if (!api) return NULL; /* an onnxruntime older than 1.17 returns no table; nothing can be reported */
    OrtStatus* status = NULL;
    pthread_mutex_lock(&domain_lock);
    if (!domain) {
        OrtCustomOpDomain* made = NULL;
        status = CALL(api, CREATE_CUSTOM_OP_DOMAIN, create_domain_fn)("onnxkit", &made);
        if (!status) status = CALL(api, CUSTOM_OP_DOMAIN_ADD, domain_add_fn)(made, &block_matmul);
        if (!status) domain = made; /* a half-made domain leaks once, on an error already reported */
    }
    pthread_mutex_unlock(&domain_lock);
    if (!status) status = CALL(api, ADD_CUSTOM_OP_DOMAIN, add_domain_fn)(options, domain);
    return status;
}

/* for benchmarks through ctypes: the arithmetic alone, single-threaded; 0, or -1 out of memory */
EXPORT int okx_multiply(const okx_layout* layout, const uint8_t* w, const float* a, int64_t rows, float* y) {
    float* sums = NULL;
    if (!okx_record_bytes(layout) || block_sums(layout, a, rows, &sums)) return -1;
    okx_groups(layout, w, a, rows, sums, y, 0, (layout->n + 15) / 16);
    free(sums);
    return 0;
}
EXPORT int okx_uses_avx512(void) { return okx_vectorized(); }
