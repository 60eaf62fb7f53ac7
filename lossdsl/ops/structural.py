"""The operations that are not elementwise: leaves, row and sample reductions, table
lookups, sample counts and the shape macros.

Their values, derivatives and kernel code depend on the axes of their arguments, so the
passes handle them by kind (``reference.Evaluator.eval_<op>``, the reduction rules of
``passes/diff.py``, the loops of ``backend/emit.py``); the records give their arity, kind and
documentation, and LaTeX notation of their own (:data:`NOTATION`).

Kinds: ``row`` reduces the class axis of each row, ``reduce`` sums over the sample axis to
a scalar, ``leaf`` takes no arguments (the class index's one argument only fixes its domain),
``gather`` reads a lookup table by labels, ``count`` weighs samples in a mean's denominator,
``macro`` names user-facing functions that ``shapes.py`` expands once shapes are known.
``gather`` also reads a computed per-sample value at each sample's partners (``at_partner``).

Groups: ``groupsum(e, g)`` (and ``groupmax``, ``groupmean``) is ``rowsum(group(e, g))``. The
``group`` macro says that the samples of ``e``'s domain are grouped by the ids in input ``g``;
``shapes.py`` then lays every per-sample input of that domain out as ragged rows, one row per
group (axes ``(n<d>, n<d>g)``), so that a group's reductions are row reductions, with their
exact derivatives, and removes the macro.

Pairs: ``pairsum(e, g)`` is ``rowsum(pairs(e, g))``: each sample ``i`` sums ``e`` over the
other samples ``j`` of its group, where ``partner(x)`` in ``e`` reads ``x_j``. ``shapes.py``
keeps the samples as they are and gives each a ragged row of its partners (axes ``(n<d>,
n<d>g)``): ``x`` reads ``x_i`` (a row's value), ``partner(x)`` of an input becomes a leaf
read at each partner slot through the partners' index the binder lays out, of a computed
value ``at_partner(v)``.

Class pairs: ``partnersum(e)`` is ``classpairs(e)``: each class ``k`` of a row sums ``e`` over
the row's other classes ``c``, where ``partner(x)`` reads ``x`` at ``c`` (``shapes.py``: a
third axis ``n<d>c`` of the partner classes); ``classpairsum(e)`` is its row sum,
``rowsum(classpairs(e))``. ``classnum()`` is the class index ``k`` as a number, so that a
pair's summand can compare the two classes' positions (``partner(classnum()) < classnum()``:
the classes below ``k``). A value computed from a partner sum and read at the partner class
(what the derivatives of a nonlinear function of ``partnersum(e)`` read) is stored by a pass
and read back at ``c`` (``at_partner`` on the axes ``(n<d>, n<d>k, n<d>c)``).
"""

from __future__ import annotations

from .registry import NOTATION, Op, register

register(
    Op("const", 0, "leaf", doc="a number", latex=NOTATION),
    Op("input", 0, "leaf", doc="an array (or number) bound at call time", latex=NOTATION),
    Op("param", 0, "leaf", doc="a named parameter with a value", latex=NOTATION),
    Op("count", 0, "leaf", doc="the length of an axis (samples N, classes K)", latex=NOTATION),
    # class_index(y): the index k of each class of y's row (its only argument fixes the domain)
    Op("class_index", 1, "leaf", doc="the class index k of each element of a row",
       latex=NOTATION),
    Op("rowsum", 1, "row", doc="the sum of each row", latex=NOTATION, callable_as="rowsum"),
    Op("rowmax", 1, "row", doc="the largest element of each row (NaN propagates)",
       latex=NOTATION, callable_as="rowmax"),
    # sparsemax_threshold(z): the tau of each row with sum_k max(z_k - tau, 0) = 1, where the
    # Euclidean projection of the row onto the probability simplex cuts (sparsemax(z) is
    # max(z - tau, 0)); found by Michelot's passes over the row (backend/emit.py)
    Op("sparsemax_threshold", 1, "row",
       doc="the threshold tau of each row with sum_k max(z_k - tau, 0) = 1 (sparsemax's)",
       latex=r"\tau_{\mathrm{sparsemax}}", callable_as="sparsemax_threshold"),
    # logit_shift(z, t): the b of each row with sum_k sigmoid(z_k + b) = t, t a per-row target
    # (the row's labels' sum): the shift that calibrates a row's logits to its positives, the
    # per-query maximum-likelihood shift of CatBoost's QueryCrossEntropy (group_logit_shift
    # builds it). -inf at t = 0 and +inf at t = the row's length (no finite b), NaN outside;
    # found by a safeguarded Newton search over the row (backend/emit.py)
    Op("logit_shift", 2, "row",
       doc="the shift b of each row with sum_k sigmoid(z_k + b) = t (a per-row target)",
       latex=r"b_{\sigma}"),
    Op("sum", 1, "reduce", doc="the sum over the samples", latex=NOTATION, callable_as="sum"),
    # table_row(C, y): row y_i of a class-by-class table C (an input bound to a (R, K) array),
    # one value per sample and class: what rowof(C, y) builds (a cost matrix's row per
    # label). A per-class vector w (K,) (classvec(w)) is the table_row of a one-row table at
    # the constant label 0, with value CLASS_VECTOR: the binder passes w as a (1, K) array.
    Op("table_row", 2, "gather", doc="row y_i of a lookup table for each sample",
       latex=NOTATION),
    # count_as(l, s): l, each sample counting s_i times in a mean's denominator (class
    # weights: PyTorch's weighted mean divides by sum(weight[y])); shapes.objective removes it
    Op("count_as", 2, "count", doc="l, whose sample i counts s_i times in a mean",
       latex=NOTATION, callable_as="count_as"),
    # mean(e) and rowmean(e) need the element count, known once shapes are: shapes.py
    # expands them
    Op("mean", 1, "macro", doc="the mean over the samples", callable_as="mean"),
    Op("rowmean", 1, "macro", doc="the mean of each row", callable_as="rowmean"),
    # group(e, g): e's values seen as the rows of the groups of g (what groupsum builds)
    Op("group", 2, "macro", doc="the values of e as rows, one row per group id of g"),
    # pairs(e, g): e over the pairs (i, j) of distinct samples of each group of g, row i
    # holding its partners j (what pairsum builds); partner(x) is x at the partner j
    Op("pairs", 2, "macro", doc="e for each partner j of each sample i in i's group of g"),
    Op("partner", 1, "macro", doc="x at the partner j of a pair sum's pair (i, j)"),
    # classpairs(e), what classpairsum(e) builds as rowsum(classpairs(e)): for each class k
    # of each row, the sum of e over its partner classes c != k, partner(x) in e reading x at
    # c (x alone reads it at k); the row sum then runs over the ordered pairs (k, c) of
    # distinct classes (PyTorch's MultiLabelMarginLoss: a row's target / non-target pairs).
    # shapes.py types e on the axes (n<d>, n<d>k, n<d>c) and expands the macro into a rowsum
    # over the partner classes (passes/pairs.py: the class pairs' derivatives)
    Op("classpairs", 1, "macro",
       doc="for each class k of a row, the sum of e over the partner classes c != k "
           "(classpairsum(e) is its row sum), partner(x) reading x at c",
       callable_as="partnersum"),
    # classpairsum(e): the row sum of partnersum(e), one value per row (resolve.py builds
    # rowsum(classpairs(e)) at once: no graph holds this record)
    Op("classpairsum", 1, "macro",
       doc="the sum of e over the ordered pairs (k, c) of distinct classes of each row",
       callable_as="classpairsum"),
    # classnum(): the index k (0, 1, ..., K - 1) of each class of a row, as a number; its
    # domain is the class matrix it meets, as onehot(0)'s (resolve.py builds class_index of
    # the constant label 0). Within a class pair sum partner(classnum()) is the partner
    # class's index c, so partner(classnum()) < classnum() selects the classes below k
    Op("classnum", 0, "macro", doc="the index k of each class of a row (0 to K - 1)",
       callable_as="classnum"),
    # colsum(e): each class's total of e over all the samples, one value per class given to
    # every row (of a vector (N,): the total, given to every sample), which a per-row
    # weight pooled over the batch reads (optax's generalized Dice). resolve.py builds
    # sum_group(e, 0, 0), a group's total with every sample in the one group of key 0: no
    # graph holds this record
    Op("colsum", 1, "macro",
       doc="each column's total of e over all the samples, given to every row",
       callable_as="colsum"),
    # at_partner(v): a computed per-sample value v read at each sample's partners (what
    # partner(x) becomes where x is not computed from the inputs sample by sample: a pair
    # sum). A pass computes v into a buffer; a later pass reads it through the partners' index
    Op("at_partner", 1, "gather", doc="the computed per-sample v at each partner of a sample",
       latex=NOTATION),
    # partner_first(g): 1 where the partner j comes before the sample i in the order the
    # samples were given (a tie-break: LambdaMART's ranks of equal scores), else 0; its
    # argument, the group ids of the pair sum, names the samples' domain
    Op("partner_first", 1, "gather", doc="1 where the partner comes first in the order given",
       callable_as="partner_first", latex=NOTATION),
    # pairdot(u, v): the dot product of the rows of two (N, D) inputs, u's at the sample i and
    # v's at its partner j, one value per pair (what rowsum(u * partner(v)) within a pair
    # sum's summand becomes: the rows are never laid out per pair). Its derivatives are
    # pairmatvec(w, r): the sum over each sample's partners j of w_ij times r's row j, where
    # r is an (N, D) value computed from inputs read at the partner's row (their partner
    # leaves on (n<d>, n<d>k)), one row of D values per sample (passes/pairs.py)
    Op("pairdot", 2, "gather", doc="the dot product of u's row i and v's row j, per pair",
       latex=r"\langle {0}, {1}' \rangle"),
    Op("pairmatvec", 2, "gather",
       doc="the sum over each sample's partners j of w_ij times the row j of r",
       latex=r"\textstyle\sum_{{j}} {0}\, {1}'"),
)

#: ``table_row``'s value for a per-class vector ``classvec(w)`` (a one-row table)
CLASS_VECTOR = "classvec"
