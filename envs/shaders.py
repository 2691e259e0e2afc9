"""GLSL for the atlas renderer.

Each mesh of a batch draws into its own tile of one atlas framebuffer: a geometry shader maps
its clip-space corners into the tile and writes four clip distances (the tile's own frustum
sides), so what falls outside is cut and a tile renders exactly as the mesh alone would.
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
uniform vec3 eye;
uniform vec3 light_dir[3];   // towards each light
uniform vec3 light_rgb[3];
uniform vec3 ambient;
uniform int per_face;        // 1: albedo from fcolours by face index
uniform sampler2D fcolours;  // 320 x B
in vec3 g_world[];
in vec3 g_colour[];
flat in int g_mesh[];
out vec3 v_colour;
out float v_depth;
void main() {
    vec3 n = cross(g_world[1] - g_world[0], g_world[2] - g_world[0]);
    float ln = length(n);
    n = ln > 0.0 ? n / ln : vec3(0.0, 0.0, 1.0);
    if (dot(n, eye - g_world[0]) < 0.0) n = -n;  // two-sided: light the side we see
    vec3 shade = ambient;
    for (int i = 0; i < 3; i++) shade += light_rgb[i] * max(dot(n, light_dir[i]), 0.0);
    int tile = g_mesh[0];
    vec3 face_albedo = per_face == 1 ? texelFetch(fcolours, ivec2(gl_PrimitiveIDIn, tile), 0).rgb : vec3(0.0);
    vec2 s = 1.0 / vec2(grid);
    vec2 o = -1.0 + 2.0 * vec2(tile % grid.x, tile / grid.x) * s;
    for (int k = 0; k < 3; k++) {
        vec4 e = view * vec4(g_world[k], 1.0);
        vec4 clip = proj * e;
        gl_ClipDistance[0] = clip.w + clip.x;
        gl_ClipDistance[1] = clip.w - clip.x;
        gl_ClipDistance[2] = clip.w + clip.y;
        gl_ClipDistance[3] = clip.w - clip.y;
        gl_Position = vec4((clip.xy + clip.w) * s + o * clip.w, clip.zw);
        v_colour = clamp((per_face == 1 ? face_albedo : g_colour[k]) * shade, 0.0, 1.0);
        v_depth = -e.z;
        EmitVertex();
    }
    EndPrimitive();
}
"""

FS = """
#version 330
in vec3 v_colour;
in float v_depth;
layout(location = 0) out vec4 f_colour;
layout(location = 1) out float f_depth;
void main() {
    f_colour = vec4(v_colour, 1.0);
    f_depth = v_depth;
}
"""
