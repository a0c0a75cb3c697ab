/*
 * Boundary concern: allocator family. Buffers handed to the caller come from native_alloc and must return
 * through native_free; a magic header turns a mismatch into a loud abort. Checklist row: "Which allocator
 * frees memory?" (and "Who owns each native pointer?" for returned values).
 */
#include "internal.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define MAGIC_LIVE UINT64_C(0x4e41544956454b31) /* "NATIVEK1" */
#define MAGIC_FREED UINT64_C(0xdeadf7eedeadf7ee)

/* Sized to max_align_t so the payload keeps malloc's alignment guarantee. */
typedef union header {
    struct {
        uint64_t magic;
        size_t size;
    } h;
    max_align_t align;
} header;

void *block_alloc(size_t size)
{
    if (size > SIZE_MAX - sizeof(header))
        return NULL;
    header *hd = malloc(sizeof(header) + size); /* size 0 still gets a unique block */
    if (hd == NULL)
        return NULL;
    hd->h.magic = MAGIC_LIVE;
    hd->h.size = size;
    atomic_fetch_add_explicit(&g_live_blocks, 1, memory_order_relaxed);
    return hd + 1;
}

void *native_alloc(size_t size)
{
    COUNT_CALL();
    return block_alloc(size);
}

void native_free(void *ptr)
{
    COUNT_CALL();
    block_free(ptr);
}

void block_free(void *ptr)
{
    if (ptr == NULL)
        return;
    header *hd = (header *)ptr - 1;
    if (hd->h.magic != MAGIC_LIVE) {
        /* After a real free the allocator may have reused the magic word, so both causes are named. */
        fprintf(stderr, "libnative: native_free(%p): not a live native_alloc block (%s)\n", ptr,
                hd->h.magic == MAGIC_FREED ? "double free" : "double free or foreign pointer");
        abort();
    }
    hd->h.magic = MAGIC_FREED;
    atomic_fetch_sub_explicit(&g_live_blocks, 1, memory_order_relaxed);
    free(hd);
}
