"""`model.summary()` as Keras 3 prints it: the same box-drawn table (column widths computed as Keras and its table
library compute them, cells wrapped at spaces), the same columns and the same totals, optimizer params included.

    Model: "seq"
    ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┓
    ┃ Layer (type)              ┃ Output Shape          ┃        Param # ┃
    ┡━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━┩
    │ dense (Dense)             │ (None, 10)            │             90 │
    └───────────────────────────┴───────────────────────┴────────────────┘
     Total params: 90 (360.00 B)
     Trainable params: 90 (360.00 B)
     Non-trainable params: 0 (0.00 B)
"""
import shutil

# (header, default line length, column positions, alignment): Keras's layouts for a chain of layers and a graph
CHAIN = (("Layer (type)", "Output Shape", "Param #"), 88, (0.45, 0.80, 1.0), "<<>")
GRAPH = (("Layer (type)", "Output Shape", "Param #", "Connected to"), 108, (0.3, 0.56, 0.74, 1.0), "<<><")


def readable_memory_size(size):
    """Keras's rendering of a byte count: 1004.00 B, 2.98 KB, ..."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def column_widths(line_length, positions):
    """Widths of the cells (padding included, borders not), as Keras asks its table library for them and as that
    library (rich) shrinks them evenly to fit the line."""
    bounds = [int(p * line_length) for p in positions]
    widths = [b - a + 2 for a, b in zip([0] + bounds[:-1], bounds)]
    remaining, share = sum(widths) - (line_length - len(widths) - 1), len(widths)
    if remaining <= 0:
        return widths
    for i, w in enumerate(widths):           # rich's ratio_reduce with equal ratios (Python's round: to even)
        cut = min(w, round(remaining / share))
        widths[i], remaining, share = w - cut, remaining - cut, share - 1
    return widths


def wrap(text, width):
    """Lines of at most `width` characters, broken at spaces; a word longer than a line keeps a line of its own,
    cut to width with an ellipsis (rich's default overflow, which Keras's table uses)."""
    lines, line = [], None
    for word in text.split(" "):
        if line is not None and len(line) + 1 + len(word) <= width:
            line += " " + word
        else:
            if line is not None:
                lines.append(line)
            line = word
    lines.append(line)
    return [ln if len(ln) <= width else ln[:width - 1] + "…" for ln in lines]


def table(rows, header, widths, align):
    def border(left, fill, mid, right):
        return left + mid.join(fill * w for w in widths) + right

    def row_lines(cells, bar):
        wrapped = [wrap(c, w - 2) for c, w in zip(cells, widths)]
        height = max(len(w) for w in wrapped)
        out = []
        for k in range(height):
            parts = [(lines[k] if k < len(lines) else "") for lines in wrapped]
            parts = [(p.rjust(w - 2) if a == ">" else p.ljust(w - 2)) for p, w, a in zip(parts, widths, align)]
            out.append(bar + bar.join(f" {p} " for p in parts) + bar)
        return out
    lines = [border("┏", "━", "┳", "┓")] + row_lines(header, "┃") + [border("┡", "━", "╇", "┩")]
    for i, row in enumerate(rows):
        if i:
            lines.append(border("├", "─", "┼", "┤"))
        lines += row_lines(row, "│")
    return lines + [border("└", "─", "┴", "┘")]


def optimizer_variables(model):
    """(count, bytes) of the optimizer's variables as Keras counts them: iterations (int32), the learning rate
    (unless a schedule gives it) and the slots; (0, 0) until the first update, as Keras builds its optimizer then."""
    opt = getattr(model, "optimizer", None)
    if not getattr(model, "compiled", False) or opt is None or not model.built or not opt.iterations:
        return 0, 0
    extra = 1 + (opt.schedule is None)
    slots = sum(s.size for s in opt.slots.values())
    return extra + slots, 4 * extra + sum(s.nbytes for s in opt.slots.values())


def summary_text(model, line_length=None, positions=None):
    rows = model.summary_rows()
    header, default_length, default_positions, align = GRAPH if rows and len(rows[0]) == 4 else CHAIN
    terminal = shutil.get_terminal_size().columns
    line_length = line_length or min(default_length, terminal - 4)
    widths = column_widths(line_length, positions or default_positions)
    trainable, frozen = model.trainable_weights, model.non_trainable_weights
    counts = [sum(w.value.size for w in ws) for ws in (trainable, frozen)]
    sizes = [sum(w.value.nbytes for w in ws) for ws in (trainable, frozen)]
    opt_count, opt_size = optimizer_variables(model)
    lines = [f'Model: "{model.name}"'] + table(rows, header, widths, align) + [
        f" Total params: {sum(counts) + opt_count:,} ({readable_memory_size(sum(sizes) + opt_size)})",
        f" Trainable params: {counts[0]:,} ({readable_memory_size(sizes[0])})",
        f" Non-trainable params: {counts[1]:,} ({readable_memory_size(sizes[1])})"]
    if opt_count:
        lines.append(f" Optimizer params: {opt_count:,} ({readable_memory_size(opt_size)})")
    return "".join(line[:terminal] + "\n" for line in lines)      # the console crops wider lines, as in Keras


def layer_row(layer):
    """The summary row of one layer: name (class), output shape with the batch dimension (a list of them for a
    layer with several outputs, as Keras prints it), parameter count."""
    def shape(s):
        return "(" + ", ".join(str(d) for d in (None,) + tuple(s)) + ")"
    shapes = "[" + ", ".join(shape(s) for s in layer.output_shape) + "]" if layer.multi_output \
        else shape(layer.output_shape)
    return f"{layer.name} ({type(layer).__name__})", shapes, f"{layer.count_params():,}"
