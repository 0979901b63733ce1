"""Every sentence of help the dashboard shows, in one place, for someone who has never heard of quantization.

Metric explanations live with the metrics themselves (`engine.metrics.METRICS[...].help`); preset
explanations live with the presets (`engine.sweep.grids`). Everything else a user reads as help is here.
"""

from __future__ import annotations

from engine.text import FROM_TORCH_COMMAND

# --- the idea, shown once at the top of the app ------------------------------------------------------------------

WHAT_IS_QUANTIZATION = (
    "Quantization stores a model's numbers with fewer bits, which makes the file smaller and often faster to run, "
    "at the risk of slightly worse answers; this tool measures exactly how much of each you get."
)

# --- what each page is for, and where to go next ----------------------------------------------------------------

MODELS_DATA_INTRO = (
    "Start here: choose a model and example data with the right answers (or use a sample), "
    "then try ways to shrink it on the **Sweep** page."
)
SWEEP_INTRO = "Try several ways of shrinking the model; each one is built, scored on your data and timed."
EXPORT_INTRO = (
    "Take a recipe you like with you as a bundle: the exact file that was measured, its settings, its figures, a "
    "report and a model card. Every bundle made here is kept in the list at the bottom."
)
NEXT_SWEEP = "Next: open **Sweep** in the sidebar to try some ways of shrinking this model."
NEXT_TRADE_OFFS = "Open **Trade-offs** in the sidebar to compare a finished sweep's recipes."
NEXT_EXPORT = "Open **Export** in the sidebar to download this recipe's model file with its settings and a report."
NO_FINISHED_SWEEP = "No finished sweep yet: start one on the **Sweep** page."
NOTHING_MEASURED = "No recipe in this sweep could be measured, so there is nothing to chart or export."

# --- where a user's work lives: this page's link -----------------------------------------------------------------

BOOKMARK_LINK = (
    "Your uploads and sweeps are kept at this page's link: bookmark it to come back to them later, in this or any "
    "browser. Anyone you give the link to sees them too."
)
OPEN_WORKSPACE = (
    "Paste a link you bookmarked earlier (or just its workspace code) to get back the uploads and sweeps made there."
)
PASTED_NOT_A_WORKSPACE = "That is not a workspace link: paste the whole link you bookmarked."
LINK_NOT_A_WORKSPACE = (
    "The link you opened does not lead to a workspace, so a new, empty one was started; check that the whole link "
    "was copied."
)

# --- what went wrong, when it was not the user's file -------------------------------------------------------------

UNEXPECTED_ERROR = "Something went wrong: {problem}. Details are in {log}"

# --- Models & data -----------------------------------------------------------------------------------------------

MODEL_PICKER = "Models you uploaded to this workspace, plus the shared library and the samples."
MODEL_UPLOAD = (
    "An ONNX file is a trained model saved in a format many tools can run; export yours from PyTorch, TensorFlow or "
    "scikit-learn. A model that keeps its weights in separate files (external data, as large models do) is uploaded "
    "as one zip of its folder: the .onnx file and those files."
)
SERVER_FILE = (
    "A file already on this server, in one of the folders its operator allows: {folders}. It is read from there, "
    "so nothing passes through the browser; when a path is given, it is used instead of an upload."
)
PYTORCH_UPLOAD = (
    "{name} looks like a PyTorch model file, and this tool takes ONNX models (.onnx), so it was not opened. "
    "Whoever made the model can export it to ONNX with torch.onnx.export, or run this on a computer with PyTorch: "
    f"`{FROM_TORCH_COMMAND}`"
)
DATASET_PICKER = "Example inputs with the right answers, used to check how well each smaller model still answers."
DATASET_UPLOAD = (
    "NPZ: one array per model input plus optional 'labels' and 'slice'; CSV/Parquet: one row per example; "
    "ZIP: one folder of images per class."
)
LABEL_COLUMN = (
    "The column holding the right answer for each row; 'automatic' uses a column named label, labels or target, "
    "and without one recipes are only compared with the original model."
)
SLICE_COLUMN = (
    "An optional column that splits rows into groups (for example by region), so you can see if one group "
    "suffers more; 'automatic' uses a column named slice."
)
SHARE_UPLOAD = (
    "Saved items are visible to everyone using this dashboard; unsaved items stay in your workspace, seen only by "
    "those with its link."
)
SHARE_EXISTING = "Make this item visible to everyone using this dashboard."
UPLOAD_LIMIT = "Files up to {limit_mb:,} MB each."
UPLOAD_MEMORY = (
    "The server holds an upload in its memory while checking it: a model at this limit needs about {single} GB of "
    "free memory on the server, {folder} GB as a zipped folder. The operator sets the limit with "
    "server.maxUploadSize in .streamlit/config.toml (or STREAMLIT_SERVER_MAX_UPLOAD_SIZE), and can instead allow "
    "opening files already on the server with QUANTSCOPE_ALLOWED_DIRS."
)
LAYERS_TABLE = "The layers whose stored numbers (weights) can be shrunk; the bigger a layer, the more shrinking it saves."
PARAMS = "How many numbers the model learned during training; each takes 4 bytes in the original file."
LABEL_COUNTS = "How many examples there are of each answer; very uneven counts make plain accuracy less telling."
SLICE_COUNTS = "How many examples fall into each group of the slice column."

# --- Sweep -------------------------------------------------------------------------------------------------------

PRESET = "A ready-made set of recipes for a goal; every set includes the original model so the others can be compared with it."
RECIPE_COUNT = "Each recipe is built, scored on your data and timed; expect a few seconds per recipe for small models."
WEIGHT_BITS = "How many bits store each learned number: 32 is the original, 16 halves the size, 8 quarters it, 4 and below shrink further but lose more accuracy."
GRANULARITY = (
    "How finely the rounding is tuned: one setting per layer ('tensor') is simplest, per output channel "
    "('channel') or per small block ('group') keeps more accuracy."
)
GROUP_SIZE = "With 'group', how many numbers share one rounding setting; smaller groups keep more accuracy but add a little size."
ACTIVATION_BITS = (
    "Whether the numbers flowing between layers are shrunk too: 'none' keeps them exact (weight-only), "
    "8 usually runs fastest on ordinary CPUs."
)
CALIBRATION = (
    "How the range of the in-between numbers is chosen from example data: 'minmax' takes the extremes, "
    "the others ignore rare outliers to keep more precision."
)
USE_GRID = "Measure exactly the combinations chosen below instead of the goal's ready-made set."
THREADS = (
    "How many processor cores each timing run may use: 1 gives the steadiest comparison, all cores the shortest "
    "times on this machine. Every time says which it used."
)
TIME_BATCHES = "Also time groups of examples at once, as a server answering many requests would."
LATENCY_CAP = (
    "How long each recipe may be timed, for each batch size. Timing stops sooner once its figure is within 2%; "
    "a shorter limit finishes the sweep sooner, and every time shows how precise it turned out."
)
CALIBRATION_DATA = (
    "Recipes that shrink the numbers passed between layers first look at example inputs to learn their ranges. "
    "By default the first rows of your validation data are used for that and left out of the scores, so no "
    "recipe is graded on examples it learned from; or pick other data of yours."
)
HELD_OUT_ROWS = "First rows of the validation data (kept out of the scores)"
EXTRA_SETS = "Other data of yours for this model: every recipe is also scored on it, to see if it holds up."
SHIFTS = (
    "Copies of your validation data with noise added, or scaled, brightened, given more contrast, or with words "
    "dropped: a quick check of whether a recipe holds up when real inputs drift. Kinds that do not fit your model "
    "stop the sweep with a message."
)
START_SWEEP = "Runs in the background: you can switch pages while it works and come back."
CANCEL = "Stops the job after the recipe it is working on; finished recipes are kept."
JOB_LIST = "Every sweep started in this workspace, plus the shared sample sweeps."
SWEEP_FINISHED = "Finished: {label}. Its results are ready to compare."
SWEEP_ENDED = "Ended before finishing: {label} ({state})."
SEE_TRADE_OFFS = "See its trade-offs"

# --- Trade-offs --------------------------------------------------------------------------------------------------

JOB_PICKER = "A finished sweep (or mixed-precision search) whose results you want to compare."
CURVE_PICKER = ("A finished mixed-precision search of the same model and data, its measured points drawn over the "
                "sweep's recipes with a marker of their own.")
NO_CURVE = "none"
SHIFTED_DATA = (
    "How much each recipe loses against the original model, on your data and on each other data set the sweep "
    "scored (yours, or made by shifting yours: noise, brightness, dropped words). A recipe that holds up on your "
    "data but loses much more on shifted data may fail when real inputs drift."
)
COLUMN_SHIFT_LOSS = "Loss against the original model on this data, in {unit}: 0 is no loss, negative is a gain."
COLUMN_MUCH_WORSE = (
    "Data sets on which this recipe loses measurably more than twice what it loses on your data, plus one point."
)
DEGRADES_UNDER_SHIFT = (
    "{recipe} loses much more on {sets} than on your data: check it on data like what it will meet before using it."
)
HOW_MEASURED = "What these figures rest on: every number on this page was measured on the file you would download."
CHANGE_INTERVAL = (
    "Scores on a finite set of examples wobble: the 95% interval is the range the true change lies in 95 times in "
    "100. When it includes 0, the data cannot tell this recipe from the original."
)
SIZE_CHART = (
    "Each dot is one recipe: further left is a smaller file, higher is better answers (lower for error metrics). "
    "The line links the best trade-offs; faded dots are beaten by another recipe on both counts. "
    "Each dot's vertical bar is where its score would land 95 times in 100 on other data like yours: "
    "dots whose bars overlap may not really differ."
)
LATENCY_CHART = (
    "Time to answer one example (median); the whisker reaches the slowest 5% of runs, and the vertical bar is "
    "the score's 95% interval. "
    "Simulated recipes have no real fast code to time, so they are not on this chart."
)
RAM_CHART = (
    "Memory the model takes at its peak while loaded and answering one example: measured in a fresh process running "
    "onnxruntime on the file, so it is what a device needs on top of the program itself. "
    "Simulated recipes have no real fast code, so they are not on this chart."
)
CHART_AXIS = "What the chart sets the score against: file size, time per example, or memory (RAM) while running."
FIXED_BATCH_LATENCY = (
    "This model only takes batches of exactly {batch} examples, so it cannot be timed one example at a time: "
    "its times per batch of {batch} are in the table below."
)
CHART_3D = "All three at once: drag to rotate; bright dots are the recipes no other recipe beats on all three."
MIXED_LEGEND = "mixed precision (the parts that break kept precise)"
SIMULATED_LEGEND = "simulated (no real kernel; size estimated)"
FRONT_LEGEND = "best trade-offs (Pareto front)"
ON_FRONT_LEGEND = "not beaten by another recipe"
DOMINATED_LEGEND = "beaten by another recipe"
TOLERANCE = (
    "How much worse than the original you accept, as a percentage of the original score "
    "(for error metrics: how much more error)."
)
RESULTS_TABLE = "Click a column title to sort; sizes and speeds are compared with the original model (1.00x)."
COLUMN_RECIPE = "A short name: W = bits per weight, A = bits per activation, then how the rounding is set up."
COLUMN_DESCRIPTION = "The recipe in words."
COLUMN_SIZE = "The model file's size; for simulated recipes, an estimate of what a real file would weigh."
COLUMN_SIZE_RATIO = "The size compared with the original model's, which is 1.00x."
COLUMN_LATENCY = "Median time to answer one example, in milliseconds."
COLUMN_LATENCY_VS_FP32 = ("Time per example over the original's, both timed together in the same fresh sessions: "
                          "the figure to compare, since the machine's speed drifts between timings.")
COLUMN_LATENCY_VS_FP32_INTERVAL = "The 95% interval of that ratio, from how much it varied between sessions."
COLUMN_LATENCY_P95 = "95% of single-example runs were at least this fast."
COLUMN_BATCH = "Median time to answer a whole batch of examples at once, in milliseconds."
COLUMN_RAM = "Peak memory of the model loaded and answering one example (a fresh onnxruntime session), in MB."
COLUMN_RAM_BATCH = "Peak memory of the model loaded and answering the whole batch at once, in MB."
COLUMN_SIMULATED = "No real fast code exists for this recipe: its answers were simulated at full precision."
COLUMN_BEST = (
    "Not beaten by any other recipe on score and size together, on score and speed together, or on score and memory "
    "together."
)
CHOOSE_RECIPE = "Pick a recipe (or click a dot in a chart) to see its details and to export it."
FLOAT_LAYERS = "Layers left at full precision, either on purpose or because no fast shrunken version of them exists."
ALL_LAYERS_KEPT = "all (original model)"
PER_SLICE = "The same scores computed separately for each group of examples, to spot a group that suffers more."
SIMULATED_DETAIL = (
    "This recipe is simulated: the answers are what the shrunken model would give, but no fast code exists for it, "
    "so its size is an estimate and it has no speed measurement."
)
NO_RECOMMENDATION_WITHOUT_REFERENCE = "Add the original model (fp32) to a sweep to get a recommendation."

# --- Export ------------------------------------------------------------------------------------------------------

DOWNLOAD_MODEL = "The exact model file that was measured; it runs anywhere ONNX models run."
DOWNLOAD_RECIPE = "The settings used, as a small JSON file, so the same shrinking can be repeated later."
DOWNLOAD_REPORT = "A page to share: where this recipe sits among the others, its scores next to the original's, its size and speed."
DOWNLOAD_CARD = "A model card in the Hugging Face format, to publish with the model."
DOWNLOAD_FIGURES = "Every figure as measured, and a fingerprint (sha256) of each file, for `quantscope verify`."
DOWNLOAD_ZIP = "All the files above in one zip; `quantscope verify` checks the unzipped folder against your data."
MAKE_BUNDLE = "Make the bundle"
MAKE_BUNDLE_HELP = "Writes the bundle from the measured file and its figures (nothing is rebuilt) and keeps it below."
REPORT_PREVIEW = "Report preview"
EXPORT_HISTORY = "Exported before"
NO_EXPORTS = "Nothing exported from this workspace yet."
PAST_EXPORT = "Download a past bundle"
PAST_ZIP = "Download that bundle (.zip)"
SIMULATED_EXPORT = (
    "This file is an fp32 simulation: it gives the answers the shrunken model would give, "
    "but it is full precision, so it is neither smaller nor faster than the original."
)

SHIP_INSTEAD = "Not for shipping. The nearest real recipe on the trade-off front is **{name}**: export that one instead."
NOTHING_TO_SHIP_INSTEAD = "Not for shipping, and no real recipe was measured in this sweep to ship instead."

# --- the Sensitivity page ------------------------------------------------------------------------------------------

SENSITIVITY_INTRO = (
    "Find which parts of the model break when it is shrunk. Each part is shrunk on its own (and, separately, "
    "everything but it), and the model is scored again: the parts that cost the most are the ones to keep precise."
)
SENSITIVITY_CANDIDATES = (
    "The ways of shrinking to test part by part: the bits each weight keeps, and whether the values passed between "
    "layers (activations) are shrunk too. 8-bit weights with 8-bit activations is the usual choice."
)
START_SENSITIVITY = "Starts a background job: it keeps running if you leave this page."
SENSITIVITY_RUNNING = "Scoring each part of the model on its own"
NO_SENSITIVITY_TABLE = "No finished sensitivity analysis yet: pick a model and its data above and start one."
SENSITIVITY_PICKER = "A finished analysis of yours: the model, its data and when it was started."
CANDIDATE_PICKER = "Which way of shrinking to look at, part by part."
HEAT_MAP = (
    "Each row is a part of the model (a layer's weights, or the values one step passes to the next); each column a "
    "way of shrinking. The darker the square, the more the score drops when only that part is shrunk. Click a "
    "square to look at that part below."
)
HEAT_MAP_COLOUR = "score drop"
BY_HARM = (
    "The same parts, the most harmful first. *Drop*: how much the score falls when only this part is shrunk. "
    "*Recovery*: how much keeping only this part precise gives back when everything else is shrunk. "
    "*Outliers*: how far the largest value lies beyond nearly all the others; a large figure means a few extreme "
    "values stretch the grid so much that the ordinary values lose their detail."
)
POINT_PICKER = "The part of the model shown below; a click on the heat map or the table picks it too."
VALUES_CHART = (
    "The part's original values (bars) and the values its shrunk version can hold (red ticks; dashed lines: the "
    "ends, beyond which values are cut off). When most bars sit between two ticks, the part loses its detail."
)
VALUES_LEGEND = "original values"
GRID_LEGEND = "values it can hold when shrunk"
NO_GRID = "This way of shrinking fixes no grid ahead for this part (it is chosen as the model runs)."
NO_HISTOGRAM = "Its values were not recorded."
KEEP_FLOAT = "Keep float"
KEEP_FLOAT_HELP = "Leave this part at full precision in your recipe; everything else is shrunk as the recipe says."
KEEP_16_BITS = "Use 16 bits"
KEEP_16_BITS_HELP = "Give this part's values 16 bits instead of 8 in your recipe: finer than 8, smaller than float."
WORKING_RECIPE = (
    "Your recipe: the chosen way of shrinking, with the parts you picked kept precise. Measure it to see its real "
    "size, speed and score beside the original model."
)
MEASURE_RECIPE = "Builds and measures your recipe (and the original model, to compare with) as a sweep job."
RECIPE_MEASURING = "Measuring your recipe: its row appears on **Trade-offs** when the job is done."
CLEAR_RECIPE = "Start again from the plain way of shrinking."
GRAPH_INPUT_NO_NODE = "This part is an input of the model; its readers are kept precise instead."
MIXED_SEARCH = (
    "Let the search pick the parts to keep precise: starting from the smallest way of shrinking this analysis "
    "tested, it keeps the most harmful parts precise (or at more bits), one step at a time, and builds and measures "
    "each step for real, until the budget is met. Works for an analysis of one way of grouping weights and one "
    "activation width (or 8 and 16 bits)."
)
MIXED_BUDGET = "What the chosen model must meet."
MIXED_BUDGET_HELP = {
    "max_drop": "The largest fall of the score from the original model, in the score's own units: 0.01 is one "
                "accuracy point (or 0.01 of similarity to the original's outputs). The smallest model that meets it "
                "is chosen.",
    "max_size_ratio": "The largest file size as a share of the original's (0.3: at most 30%). The best-scoring "
                      "model within it is chosen.",
    "max_latency_ms": "The largest median time per example, in milliseconds. The best-scoring model within it is "
                      "chosen.",
}
START_MIXED = "Starts a background job that builds and measures each step; it keeps running if you leave this page."
MIXED_RUNNING = "Searching mixed precision"
MIXED_DONE = ("{summary}. Open **Trade-offs** in the sidebar: the curve's points are drawn (as diamonds) over the "
              "sweep of the same model and data, and each is exportable on **Export**.")
MIXED_FAILED = "The mixed-precision search failed: {error}"
