"""GLSL for the atlas renderer.

Each mesh of a batch draws into its own tile of one atlas framebuffer. The geometry shader does
the perspective divide itself, snaps each corner's tile-local window position to 1/256 pixel
and adds the tile's integer origin, which is exact in float: the rasteriser then sees every
tile's triangles at the same sub-pixel positions as the mesh drawn alone, so a batch gives the
same images as one-by-one draws. Fragments outside the tile are discarded. Tiles are drawn
upside down so that a read-back of a column of tiles already is the batch of images in order.
The same geometry shader computes each face's flat normal and Lambertian shade once per
triangle, which leaves the fragment shader two writes: on llvmpipe that made the draw about
1.8x faster than shading per fragment. Ray meshes are drawn indexed (162 shared vertices per
mesh, one instance per mesh) from textures of ray lengths, poses and colours.
"""

# Ray meshes: gl_InstanceID is the mesh, gl_VertexID the ray.
RAY_VS = """
#version 330
uniform sampler2D rays;      // 162 x 1: xyz
uniform sampler2D lengths;   // 162 x B
uniform sampler2D poses;     // 3 x B: rows of [s R | t]
uniform sampler2D vcolours;  // 162 x B
out vec3 g_world;
out vec3 g_colour;
flat out int g_mesh;
void main() {
    int m = gl_InstanceID;
    int i = gl_VertexID;
    vec4 r0 = texelFetch(poses, ivec2(0, m), 0);
    vec4 r1 = texelFetch(poses, ivec2(1, m), 0);
    vec4 r2 = texelFetch(poses, ivec2(2, m), 0);
    vec3 q = texelFetch(lengths, ivec2(i, m), 0).r * texelFetch(rays, ivec2(i, 0), 0).xyz;
    g_world = vec3(dot(r0.xyz, q), dot(r1.xyz, q), dot(r2.xyz, q)) + vec3(r0.w, r1.w, r2.w);
    g_colour = texelFetch(vcolours, ivec2(i, m), 0).rgb;
    g_mesh = m;
}
"""

# General meshes (any topology): world-space corners, colours and tile built on the host.
MESH_VS = """
#version 330
in vec3 pos;
in vec3 colour;
in float tile;
out vec3 g_world;
out vec3 g_colour;
flat out int g_mesh;
void main() {
    g_world = pos;
    g_colour = colour;
    g_mesh = int(tile + 0.5);
}
"""

GS = """
#version 330
layout(triangles) in;
layout(triangle_strip, max_vertices = 3) out;
uniform mat4 view;
uniform mat4 proj;
uniform ivec2 grid;          // atlas columns, rows
uniform vec2 tile_px;        // tile width, height in pixels
uniform vec2 atlas_px;       // framebuffer width, height: powers of two
uniform vec3 eye;
uniform vec3 light_dir[3];   // towards each light
uniform vec3 light_rgb[3];
uniform vec3 ambient;
uniform int per_face;        // 1: albedo from fcolours by face index
uniform sampler2D fcolours;  // 320 x B
in vec3 g_world[];
in vec3 g_colour[];
flat in int g_mesh[];
noperspective out vec3 v_colour_w;  // colour / w, 1 / w: perspective-correct by hand
noperspective out float v_inv_w;
flat out vec4 v_tile;               // the tile's pixel rectangle
void main() {
    vec4 clip[3];
    for (int k = 0; k < 3; k++) {
        clip[k] = proj * (view * vec4(g_world[k], 1.0));
        if (clip[k].w <= 1e-6) return;  // behind the eye: not drawn (see MeshRenderer)
    }
    vec3 n = cross(g_world[1] - g_world[0], g_world[2] - g_world[0]);
    float ln = length(n);
    n = ln > 0.0 ? n / ln : vec3(0.0, 0.0, 1.0);
    if (dot(n, eye - g_world[0]) < 0.0) n = -n;  // two-sided: light the side we see
    vec3 shade = ambient;
    for (int i = 0; i < 3; i++) shade += light_rgb[i] * max(dot(n, light_dir[i]), 0.0);
    int tile = g_mesh[0];
    vec3 face_albedo = per_face == 1 ? texelFetch(fcolours, ivec2(gl_PrimitiveIDIn, tile), 0).rgb : vec3(0.0);
    vec2 origin = vec2(tile % grid.x, tile / grid.x) * tile_px;
    for (int k = 0; k < 3; k++) {
        vec3 ndc = clip[k].xyz / clip[k].w;
        // tile-local window position snapped to 1/256 px, so that adding the tile's integer
        // origin is exact and every tile rasterises exactly as the mesh alone
        vec2 win = floor((ndc.xy * 0.5 + 0.5) * tile_px * 256.0 + 0.5) / 256.0;
        // drawn upside down: GL reads rows bottom-up, so each tile then reads back top row first
        win.y = tile_px.y - win.y;
        win += origin;
        gl_Position = vec4(win / atlas_px * 2.0 - 1.0, ndc.z, 1.0);
        vec3 albedo = per_face == 1 ? face_albedo : g_colour[k];
        v_inv_w = 1.0 / clip[k].w;
        v_colour_w = clamp(albedo * shade, 0.0, 1.0) * v_inv_w;
        v_tile = vec4(origin, origin + tile_px);
        EmitVertex();
    }
    EndPrimitive();
}
"""

FS = """
#version 330
noperspective in vec3 v_colour_w;
noperspective in float v_inv_w;
flat in vec4 v_tile;
layout(location = 0) out vec4 f_colour;
layout(location = 1) out float f_depth;
void main() {
    if (any(lessThan(gl_FragCoord.xy, v_tile.xy)) || any(greaterThanEqual(gl_FragCoord.xy, v_tile.zw)))
        discard;  // outside this mesh's tile
    f_colour = vec4(v_colour_w / v_inv_w, 1.0);
    f_depth = 1.0 / v_inv_w;  // w is the eye-space depth for a perspective camera
}
"""

# Reduction passes (envs/reward.py): one triangle that covers the viewport, no attributes.
COVER_VS = """
#version 330
void main() {
    gl_Position = vec4(float((gl_VertexID & 1) * 4 - 1), float((gl_VertexID & 2) * 2 - 1), 0.0, 1.0);
}
"""

# One fragment per (row r, tile m): the row's summed squared difference between render and
# target, in integer units of 1/255. Every term is an integer below 2^24, so float adds of up
# to 8 pixels are exact; the row's total is kept in 32 bits (exact for any row the GL can
# draw). Texel fetches are the cost on llvmpipe: targets come packed, 4 RGBA8 pixels a texel
# (a third off the pass), and 8 pixels an iteration halve the loop's overhead.
ROW_SUMS_FS = """
#version 330
uniform sampler2D colour;         // the atlas just drawn, tiles upside down (see GS)
uniform usampler2DArray targets;  // per_layer images stacked in each layer, row 0 first
uniform isampler2D target_idx;    // max_batch x 1: each tile's target
uniform int cols;                 // atlas columns
uniform ivec2 tile;               // tile width, height
uniform int per_layer;
out uint row_sum;
ivec2 src;
ivec3 dst;
float px(uint t, int x) {
    vec3 k = round(255.0 * texelFetch(colour, src + ivec2(x, 0), 0).rgb)
             - vec3(uvec3(t, t >> 8u, t >> 16u) & 255u);
    return dot(k, k);
}
float quad(int x) {
    uvec4 t = texelFetch(targets, dst + ivec3(x / 4, 0, 0), 0);
    return px(t.x, x) + px(t.y, x + 1) + px(t.z, x + 2) + px(t.w, x + 3);
}
void main() {
    int r = int(gl_FragCoord.x);
    int m = int(gl_FragCoord.y);
    int i = texelFetch(target_idx, ivec2(m, 0), 0).r;
    src = ivec2((m % cols) * tile.x, (m / cols) * tile.y + r);
    dst = ivec3(0, (i % per_layer) * tile.y + r, i / per_layer);
    uint s = 0u;
    int x = 0;
    for (; x + 8 <= tile.x; x += 8)
        s += uint(quad(x) + quad(x + 4));
    for (; x + 4 <= tile.x; x += 4)
        s += uint(quad(x));
    if (x < tile.x) {  // the last 1-3 pixels of a width that is no multiple of 4
        uvec4 t = texelFetch(targets, dst + ivec3(x / 4, 0, 0), 0);
        float e = px(t.x, x);
        if (x + 1 < tile.x) e += px(t.y, x + 1);
        if (x + 2 < tile.x) e += px(t.z, x + 2);
        s += uint(e);
    }
    row_sum = s;
}
"""

# One fragment per tile: its rows summed into 64 bits (low word, high word).
TILE_SUMS_FS = """
#version 330
uniform usampler2D row_sums;      // rows x max_batch
uniform int rows;
out uvec2 tile_sum;
void main() {
    int m = int(gl_FragCoord.x);
    uint lo = 0u;
    uint hi = 0u;
    for (int r = 0; r < rows; r++) {
        uint v = texelFetch(row_sums, ivec2(r, m), 0).r;
        lo += v;
        if (lo < v) hi += 1u;
    }
    tile_sum = uvec2(lo, hi);
}
"""
