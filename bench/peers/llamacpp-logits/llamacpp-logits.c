// llamacpp-logits.c - dump llama.cpp's exact f32 logits, using the prebuilt llama.cpp libraries that
// node-llama-cpp ships (bench/peers), so seedinfer (`numerics: 'llamacpp'`) can be checked bit for bit.
//
// usage: LLAMACPP_LIBS_DIR=<dir of libggml-cpu-*.so> llamacpp-logits <model.gguf> <tokens.json> <P> <M> <outdir>
//   tokens.json: a JSON array of token ids, e.g. [1, 2, 3]; the first P+M are used, no BOS is added.
//   1. ONE llama_decode of tokens[0..P) at pos 0..P-1, logits for every position -> outdir/batch_logits.f32 [P][n_vocab]
//   2. M llama_decode calls of one token each, tokens[P+i] at pos P+i     -> outdir/decode_logits.f32 [M][n_vocab]
//      (row i = logits after token P+i, i.e. predicting token P+i+1)
//   plus outdir/meta.json and outdir/llama.log. All .f32 files are raw little-endian f32.
// Context as node-llama-cpp creates it with {gpuLayers: 0, contextSize: 1024, batchSize: 1024, sequences: 1,
// threads: 1, flashAttention: false}: CPU only, n_ctx = n_batch = n_ubatch = 1024, 1 thread, f16 K/V,
// swa_full = false, kv_unified = false, no_perf, lazy_mode off.
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ggml-backend.h"
#include "llama.h"

#define N_CTX 1024

static FILE * g_log = NULL;
static char g_cpu_backend[256] = "unknown";

static void die(const char * msg, const char * arg) {
    fprintf(stderr, "llamacpp-logits: error: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(1);
}

static void log_cb(enum ggml_log_level level, const char * text, void * ud) {
    (void) ud;
    if (g_log) fputs(text, g_log);
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

// the CPU backend variant that ggml_backend_load_all_from_path kept loaded (it dlcloses the others)
static int find_cpu_backend(struct dl_phdr_info * info, size_t size, void * ud) {
    (void) size; (void) ud;
    const char * base = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    base = base ? base + 1 : info->dlpi_name;
    if (base && strncmp(base, "libggml-cpu", 11) == 0) snprintf(g_cpu_backend, sizeof g_cpu_backend, "%s", base);
    return 0;
}

// parse a file that is exactly a JSON array of integers
static int * read_tokens(const char * path, int * n) {
    FILE * f = fopen(path, "rb");
    if (!f) die("cannot open tokens file", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char * s = malloc(len + 1);
    if (fread(s, 1, len, f) != (size_t) len) die("cannot read tokens file", path);
    s[len] = 0;
    fclose(f);
    int cap = 1024, k = 0;
    int * a = malloc(cap * sizeof *a);
    char * p = s;
    while (isspace((unsigned char) *p)) p++;
    if (*p++ != '[') die("tokens file is not a JSON array of integers", path);
    while (isspace((unsigned char) *p)) p++;
    if (*p == ']') die("tokens file: empty array", path);
    for (;;) {
        char * e;
        errno = 0;
        long v = strtol(p, &e, 10);
        if (e == p || errno || v < 0 || v > 0x7fffffff) die("tokens file: expected a non-negative integer", path);
        if (k == cap) a = realloc(a, (cap *= 2) * sizeof *a);
        a[k++] = (int) v;
        for (p = e; isspace((unsigned char) *p); p++) {}
        if (*p == ']') break;
        if (*p++ != ',') die("tokens file: expected ',' or ']'", path);
    }
    for (p++; isspace((unsigned char) *p); p++) {}
    if (*p) die("tokens file: trailing data after the array", path);
    free(s);
    *n = k;
    return a;
}

static int parse_int(const char * s, const char * what) {
    char * e;
    long v = strtol(s, &e, 10);
    if (e == s || *e || v < -1000000 || v > 1000000) die("not an integer", what);
    return (int) v;
}

static FILE * open_out(const char * dir, const char * name, const char * mode) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE * f = fopen(path, mode);
    if (!f) die("cannot create output file", path);
    return f;
}

static void write_f32(FILE * f, const float * x, size_t n) {
    if (!x) die("llama.cpp returned no logits", NULL);
    if (fwrite(x, sizeof(float), n, f) != n) die("write failed", NULL);
}

static void json_str(FILE * f, const char * s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char) *s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: LLAMACPP_LIBS_DIR=<dir> %s <model.gguf> <tokens.json> <P> <M> <outdir>\n", argv[0]);
        return 1;
    }
    const char * model_path = argv[1], * outdir = argv[5];
    const char * libs = getenv("LLAMACPP_LIBS_DIR");
    const int P = parse_int(argv[3], "P"), M = parse_int(argv[4], "M");
    int n_tok = 0;
    int * toks = read_tokens(argv[2], &n_tok);
    struct stat st;
    if (!libs || !*libs) die("set LLAMACPP_LIBS_DIR to the directory of the prebuilt libggml-cpu-*.so", NULL);
    if (stat(libs, &st) != 0 || !S_ISDIR(st.st_mode)) die("LLAMACPP_LIBS_DIR is not a directory", libs);
    if (stat(model_path, &st) != 0) die("model file not found", model_path);
    if (P < 2) die("P must be >= 2 (a batch of one token takes other kernels)", argv[3]);
    if (M < 0) die("M must be >= 0", argv[4]);
    if (P + M > n_tok) { fprintf(stderr, "llamacpp-logits: error: P+M=%d > %d tokens in %s\n", P + M, n_tok, argv[2]); return 1; }
    if (P + M > N_CTX) { fprintf(stderr, "llamacpp-logits: error: P+M=%d > n_ctx=%d\n", P + M, N_CTX); return 1; }
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) die("cannot create output directory", outdir);

    g_log = open_out(outdir, "llama.log", "w");
    llama_log_set(log_cb, NULL);
    ggml_backend_load_all_from_path(libs);
    if (ggml_backend_dev_count() == 0) die("no ggml backend could be loaded from", libs);
    dl_iterate_phdr(find_cpu_backend, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.lazy_mode = LLAMA_LAZY_MODE_OFF;
    struct llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) die("llama.cpp failed to load the model (see llama.log)", model_path);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    for (int i = 0; i < P + M; i++)
        if (toks[i] >= n_vocab) { fprintf(stderr, "llamacpp-logits: error: token %d at index %d >= n_vocab %d\n", toks[i], i, n_vocab); return 1; }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = N_CTX;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 1;
    cp.no_perf = true;
    cp.swa_full = false;
    cp.kv_unified = false;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) die("llama.cpp failed to create the context (see llama.log)", NULL);

    // 1. one batch of P tokens, logits for all positions
    struct llama_batch batch = llama_batch_init(P, 0, 1);
    for (int i = 0; i < P; i++) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = P;
    int rc = llama_decode(ctx, batch);
    if (rc != 0) { fprintf(stderr, "llamacpp-logits: error: batch llama_decode returned %d\n", rc); return 1; }
    FILE * f = open_out(outdir, "batch_logits.f32", "wb");
    write_f32(f, llama_get_logits(ctx), (size_t) P * n_vocab);
    fclose(f);

    // 2. M single-token decodes (teacher forced)
    f = open_out(outdir, "decode_logits.f32", "wb");
    for (int i = 0; i < M; i++) {
        batch.token[0] = toks[P + i];
        batch.pos[0] = P + i;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        batch.n_tokens = 1;
        rc = llama_decode(ctx, batch);
        if (rc != 0) { fprintf(stderr, "llamacpp-logits: error: llama_decode at pos %d returned %d\n", P + i, rc); return 1; }
        write_f32(f, llama_get_logits_ith(ctx, -1), n_vocab);
    }
    fclose(f);

    f = open_out(outdir, "meta.json", "w");
    fprintf(f, "{\n  \"P\": %d,\n  \"M\": %d,\n  \"n_vocab\": %d,\n  \"tokens\": [", P, M, n_vocab);
    for (int i = 0; i < P + M; i++) fprintf(f, "%s%d", i ? ", " : "", toks[i]);
    fprintf(f, "],\n  \"systemInfo\": ");
    json_str(f, llama_print_system_info());
    fprintf(f, ",\n  \"cpuBackend\": ");
    json_str(f, g_cpu_backend);
    fprintf(f, "\n}\n");
    fclose(f);
    fprintf(stderr, "llamacpp-logits: P=%d M=%d n_vocab=%d cpu backend %s -> %s\n", P, M, n_vocab, g_cpu_backend, outdir);

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(toks);
    if (g_log) fclose(g_log);
    return 0;
}
